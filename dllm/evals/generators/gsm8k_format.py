"""Seeded grade-school word problems written exactly as GSM8K writes them.

Why: the shipped tiny model answers 16-token synthetic prompts, so nothing it measures says how a policy behaves
on LLaDA's real workload: a 40-150 token multi-line answer decoded in blocks of 32, followed by EOS padding,
scored by GSM8K's answer extraction. These problems have that shape and are scored by
:mod:`dllm.evals.gsm8k` unchanged, while staying small enough for a model trained from scratch to learn.

Record schema is GSM8K's own: ``{"question": str, "answer": str}``. The answer has one line per arithmetic
step, each with GSM8K's calculator annotation (``48 / 2 = <<48/2=24>>24``; the annotation is kept because real
GSM8K answers and few-shot examples carry it, and the harness must score them unchanged), then ``#### N``.
Every step is an exact non-negative integer computation (checked by :func:`evaluate` while generating, and
every sub-expression too, so ``/`` never leaves a remainder).

Splits (both drawn from ``random.Random`` only, deterministic per seed and prefix-stable in ``n``):

* templates are partitioned: ``TEST_TEMPLATES`` never occur in the train split;
* every *wide* quantity slot (a range of at least ``WIDE_SLOT`` values) is cut at three quarters of its range:
  train draws from the low part, test from the high part (``slot_range``), so test numbers are numbers that
  slot never held in training. Narrow slots (small multipliers, 2-5 items) are shared.
* the test split mixes held-out templates (``TEST_TEMPLATE_SHARE`` of the records) with train templates; all
  its records use held-out numbers. **Quirk**: a test split made only of unseen templates would leave a small
  model near 0% and say nothing about decoding policies; the mix reports both in-template and new-template
  generalisation, told apart by ``meta["template_split"]``.

``meta`` (only with ``with_meta=True``, never in the written JSONL) records the template, the split it belongs
to, the number of steps and every slot as ``[lo, hi, value]``.
"""

from __future__ import annotations

import ast
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from dllm.errors import DllmError, check_choice

SPLITS: tuple[str, ...] = ("train", "test")
WIDE_SLOT: int = 8
"""A slot with at least this many possible values is split between train (low 3/4) and test (high 1/4)."""
TEST_TEMPLATE_SHARE: float = 0.5
"""Share of test records drawn from held-out templates (the rest: train templates with held-out numbers)."""
MIN_STEPS, MAX_STEPS = 2, 5


def slot_range(lo: int, hi: int, split: str) -> tuple[int, int]:
    """The inclusive sub-range of slot ``[lo, hi]`` that ``split`` draws from."""
    if hi < lo:
        raise DllmError(f"empty number slot [{lo}, {hi}]")
    if hi - lo + 1 < WIDE_SLOT:
        return lo, hi
    cut = lo + (hi - lo + 1) * 3 // 4
    return (lo, cut - 1) if split == "train" else (cut, hi)


def evaluate(expr: str) -> int:
    """Value of a ``+ - * /`` integer expression, requiring every sub-result to be a non-negative integer."""

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                v = a + b
            elif isinstance(node.op, ast.Sub):
                v = a - b
            elif isinstance(node.op, ast.Mult):
                v = a * b
            else:
                if b == 0:
                    raise DllmError(f"division by zero in {expr!r}")
                v = a / b
            if v.denominator != 1 or v < 0:
                raise DllmError(f"step {expr!r} has a non-integer or negative intermediate {v}")
            return v
        raise DllmError(f"unsupported expression {expr!r}")

    return int(ev(ast.parse(expr, mode="eval").body))


@dataclass(frozen=True)
class Person:
    name: str
    he: str
    him: str
    his: str


_PEOPLE: tuple[tuple[str, str], ...] = (
    ("Natalia", "f"), ("James", "m"), ("Maria", "f"), ("Tom", "m"), ("Aisha", "f"), ("Carlos", "m"),
    ("Mei", "f"), ("Omar", "m"), ("Priya", "f"), ("Lucas", "m"), ("Hannah", "f"), ("Diego", "m"),
    ("Fatima", "f"), ("Ethan", "m"), ("Sofia", "f"), ("Kenji", "m"), ("Grace", "f"), ("Noah", "m"),
    ("Chloe", "f"), ("Samuel", "m"), ("Amara", "f"), ("Liam", "m"), ("Rosa", "f"), ("Ivan", "m"),
    ("Zoe", "f"), ("Mateo", "m"), ("Lena", "f"), ("Yusuf", "m"), ("Emma", "f"), ("Felix", "m"),
    ("Nadia", "f"), ("Owen", "m"), ("Julia", "f"), ("Ravi", "m"), ("Claire", "f"), ("Jamal", "m"),
)


class Draw:
    """Everything a template draws: people, choices and split-aware numbers; collects the answer lines."""

    def __init__(self, rng: random.Random, split: str):
        self.rng, self.split = rng, split
        self.slots: dict[str, list[int]] = {}
        self.lines: list[str] = []
        self._used: set[str] = set()
        self.spaced = rng.random() < 0.7  # GSM8K writes both "16 - 3 = <<...>>" and "16-3=<<...>>"

    def person(self) -> Person:
        name, sex = self.rng.choice([p for p in _PEOPLE if p[0] not in self._used])
        self._used.add(name)
        return Person(name, *(("he", "him", "his") if sex == "m" else ("she", "her", "her")))

    def pick(self, options):
        return self.rng.choice(options)

    def num(self, slot: str, lo: int, hi: int) -> int:
        a, b = slot_range(lo, hi, self.split)
        value = self.rng.randint(a, b)
        self.slots[slot] = [lo, hi, value]
        return value

    def say(self, text: str, expr: str) -> int:
        """Append one reasoning line: ``@`` in ``text`` becomes ``expr = <<expr=v>>v`` (``$@`` puts the dollar
        sign before the annotation, as GSM8K does)."""
        value = evaluate(expr)
        compact = expr.replace(" ", "")
        shown = expr if self.spaced else compact
        sep = " = " if self.spaced else "="
        if "$@" in text:
            text = text.replace("$@", f"{shown}{sep}$<<{compact}={value}>>{value}")
        else:
            text = text.replace("@", f"{shown}{sep}<<{compact}={value}>>{value}")
        self.lines.append(text)
        self.last = value
        return value


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# --- templates -----------------------------------------------------------------------------------------------------
# Each returns the question; the answer lines accumulate in the Draw, the last line's value is the answer.


def _bake_sale(d: Draw) -> str:
    p = d.person()
    item = d.pick(("muffins", "cookies", "cupcakes", "brownies", "bagels"))
    a, b = d.num("batches", 2, 5), d.num("per_batch", 8, 31)
    c = d.num("kept", 1, a * b // 3)
    price = d.num("price", 2, 5)
    t = d.say(f"{p.name} bakes @ {item}.", f"{a} * {b}")
    s = d.say(f"{_cap(p.he)} sells @ {item}.", f"{t} - {c}")
    d.say(f"{_cap(p.he)} makes $@.", f"{s} * {price}")
    return d.pick((
        f"{p.name} bakes {a} batches of {item} with {b} {item} in each batch. {_cap(p.he)} keeps {c} for "
        f"{p.his} family and sells the rest for ${price} each. How much money does {p.name} make?",
        f"For a bake sale, {p.name} made {a} trays of {item}, and each tray held {b} {item}. {_cap(p.he)} "
        f"saved {c} of them and sold every other one at ${price} apiece. How many dollars did {p.he} earn?",
    ))


def _savings(d: Draw) -> str:
    p, q = d.person(), d.person()
    a, w = d.num("weekly", 8, 39), d.num("weeks", 3, 12)
    g = d.num("gift", 10, 49)
    thing = d.pick(("bike", "video game", "pair of skates", "guitar", "tablet"))
    c = d.num("cost", 20, a * w + g - 1)
    s = d.say(f"{p.name} saves $@ in {w} weeks.", f"{a} * {w}")
    t = d.say(f"With the gift {p.he} has $@.", f"{s} + {g}")
    d.say(f"After buying the {thing}, {p.he} has $@ left.", f"{t} - {c}")
    return d.pick((
        f"{p.name} saves ${a} every week for {w} weeks. Then {q.name} gives {p.him} ${g} as a gift. {p.name} "
        f"buys a {thing} for ${c}. How much money does {p.name} have left?",
        f"Every week {p.name} puts ${a} into a jar. After {w} weeks, {p.his} friend {q.name} adds ${g}. If "
        f"{p.name} then spends ${c} on a {thing}, how many dollars are left in the jar?",
    ))


def _fruit_stand(d: Draw) -> str:
    p = d.person()
    f1, f2 = d.rng.sample(("apples", "oranges", "pears", "peaches", "plums", "lemons"), 2)
    a, b = d.num("boxes1", 2, 9), d.num("per_box1", 12, 43)
    c, e = d.num("boxes2", 2, 9), d.num("per_box2", 12, 43)
    x = d.say(f"There are @ {f1}.", f"{a} * {b}")
    y = d.say(f"There are @ {f2}.", f"{c} * {e}")
    d.say("In total there are @ pieces of fruit.", f"{x} + {y}")
    return d.pick((
        f"{p.name}'s fruit stand has {a} boxes of {f1} with {b} {f1} in each box and {c} boxes of {f2} with "
        f"{e} {f2} in each box. How many pieces of fruit are at the stand?",
        f"A truck brings {a} crates of {f1} and {c} crates of {f2} to {p.name}'s shop. Each crate of {f1} holds "
        f"{b} {f1} and each crate of {f2} holds {e} {f2}. How many pieces of fruit does the truck bring?",
    ))


def _reading(d: Draw) -> str:
    p = d.person()
    a, days = d.num("per_day", 8, 39), d.num("days", 2, 7)
    r = 2 * d.num("half_left", 10, 49)
    n = a * days + r
    read = d.say(f"{p.name} reads @ pages in {days} days.", f"{a} * {days}")
    left = d.say("There are @ pages left.", f"{n} - {read}")
    d.say(f"Tomorrow {p.he} reads @ pages.", f"{left} / 2")
    return d.pick((
        f"{p.name} is reading a {n}-page book. {_cap(p.he)} reads {a} pages a day for {days} days. Tomorrow "
        f"{p.he} wants to read half of the pages that are left. How many pages should {p.he} read tomorrow?",
        f"A novel has {n} pages. {p.name} read {a} pages every day for {days} days. If {p.he} reads half of the "
        f"remaining pages tomorrow, how many pages will {p.he} read tomorrow?",
    ))


def _garden(d: Draw) -> str:
    p = d.person()
    crop, produce = d.pick((("tomato plants", "tomatoes"), ("pepper plants", "peppers"),
                            ("bean plants", "beans"), ("strawberry plants", "strawberries")))
    rows, k = d.num("rows", 2, 9), d.num("per_row", 8, 27)
    eaten = d.num("eaten", 1, rows * k // 4)
    t = d.num("yield", 2, 6)
    total = d.say(f"{p.name} plants @ {crop}.", f"{rows} * {k}")
    alive = d.say("@ plants are left after the rabbits.", f"{total} - {eaten}")
    d.say(f"They give @ {produce}.", f"{alive} * {t}")
    return d.pick((
        f"{p.name} plants {rows} rows of {crop} with {k} plants in each row. Rabbits eat {eaten} of the plants. "
        f"Each plant that is left gives {t} {produce}. How many {produce} does {p.name} pick?",
        f"In {p.his} garden, {p.name} has {rows} rows with {k} {crop} per row. {eaten} plants die, and every "
        f"other plant grows {t} {produce}. How many {produce} grow in the garden?",
    ))


def _classroom(d: Draw) -> str:
    p = d.person()
    girls = d.num("girls", 8, 23)
    boys = d.num("boys", 6, 21)
    pack = d.pick((4, 5, 6, 10))
    per = pack * d.num("packs_per_boy", 1, 3)
    n = girls + boys
    b = d.say("There are @ boys.", f"{n} - {girls}")
    pencils = d.say("The boys get @ pencils.", f"{b} * {per}")
    d.say(f"{p.name} needs @ packs.", f"{pencils} / {pack}")
    return d.pick((
        f"There are {n} students in {p.name}'s class and {girls} of them are girls. {p.name} gives every boy "
        f"{per} pencils. Pencils come in packs of {pack}. How many packs does {p.name} need?",
        f"{p.name} teaches a class of {n} children, {girls} of whom are girls. Each boy gets {per} pencils, and "
        f"pencils are sold in boxes of {pack}. How many boxes must {p.name} buy?",
    ))


def _shopping(d: Draw) -> str:
    p = d.person()
    x, a = d.num("shirts", 2, 5), d.num("shirt_price", 8, 27)
    y, b = d.num("pants", 1, 4), d.num("pant_price", 15, 46)
    bill = d.pick([v for v in (50, 100, 200, 500) if v > x * a + y * b][:2])
    s = d.say("The shirts cost $@.", f"{x} * {a}")
    t = d.say("The pants cost $@.", f"{y} * {b}")
    u = d.say("Together they cost $@.", f"{s} + {t}")
    d.say(f"{p.name} gets $@ in change.", f"{bill} - {u}")
    return d.pick((
        f"{p.name} buys {x} shirts for ${a} each and {y} pairs of pants for ${b} each. {_cap(p.he)} pays with a "
        f"${bill} bill. How much change does {p.he} get?",
        f"At the mall, {p.name} picks {x} T-shirts that cost ${a} each and {y} pairs of jeans that cost ${b} "
        f"each. If {p.he} hands the cashier ${bill}, how many dollars of change should {p.he} get back?",
    ))


def _road_trip(d: Draw) -> str:
    p = d.person()
    s1, h1 = d.num("speed1", 40, 71), d.num("hours1", 2, 5)
    s2, h2 = d.num("speed2", 20, 51), d.num("hours2", 1, 4)
    a = d.say(f"First {p.he} drives @ miles.", f"{s1} * {h1}")
    b = d.say(f"Then {p.he} drives @ miles.", f"{s2} * {h2}")
    d.say(f"{_cap(p.he)} drives @ miles in all.", f"{a} + {b}")
    return d.pick((
        f"{p.name} drives at {s1} miles per hour for {h1} hours, then at {s2} miles per hour for {h2} hours. How "
        f"many miles does {p.he} drive in total?",
        f"On a road trip, {p.name} spends {h1} hours on the highway going {s1} miles an hour and {h2} hours on "
        f"small roads going {s2} miles an hour. How far does {p.he} travel in miles?",
    ))


def _pizza_party(d: Draw) -> str:
    p = d.person()
    slices = d.pick((6, 8, 10, 12))
    pizzas = d.num("pizzas", 3, 18)
    per_person = d.pick([k for k in (2, 3, 4) if (pizzas * slices) % k == 0] or [1])
    price = d.num("pizza_price", 8, 19)
    people = pizzas * slices // per_person
    total = d.say("The guests eat @ slices.", f"{people} * {per_person}")
    n = d.say("That is @ pizzas.", f"{total} / {slices}")
    d.say("The pizzas cost $@.", f"{n} * {price}")
    return d.pick((
        f"{p.name} is having a party for {people} guests. Each guest eats {per_person} slices of pizza and each "
        f"pizza is cut into {slices} slices. A pizza costs ${price}. How much does {p.name} spend on pizza?",
        f"{people} people come to {p.name}'s party and every person eats {per_person} slices. If one pizza has "
        f"{slices} slices and costs ${price}, how many dollars does the pizza cost in total?",
    ))


def _wages(d: Draw) -> str:
    p = d.person()
    h, days, w = d.num("hours", 3, 8), d.num("days", 2, 6), d.num("wage", 10, 29)
    spent = d.num("spent", 10, 79)
    hours = d.say(f"{p.name} works @ hours.", f"{h} * {days}")
    pay = d.say(f"{_cap(p.he)} earns $@.", f"{hours} * {w}")
    d.say(f"{_cap(p.he)} has $@ left.", f"{pay} - {spent}")
    return d.pick((
        f"{p.name} works {h} hours a day for {days} days and is paid ${w} an hour. {_cap(p.he)} spends ${spent} "
        f"of it on groceries. How much money does {p.he} have left?",
        f"At {p.his} summer job {p.name} earns ${w} per hour. This week {p.he} worked {days} days, {h} hours "
        f"each day, and then paid ${spent} for a concert ticket. How many dollars does {p.he} have now?",
    ))


def _library(d: Draw) -> str:
    p = d.person()
    shelves, per = d.num("shelves", 3, 9), 4 * d.num("per_shelf_quarter", 4, 15)
    frac, word = d.pick(((2, "half"), (4, "a quarter")))
    new = d.num("new_books", 10, 49)
    total = d.say("The library has @ books.", f"{shelves} * {per}")
    gone = d.say("It gives away @ books.", f"{total} / {frac}")
    left = d.say("It keeps @ books.", f"{total} - {gone}")
    d.say("Now it has @ books.", f"{left} + {new}")
    return d.pick((
        f"A school library has {shelves} shelves with {per} books on each shelf. {p.name}, the librarian, gives "
        f"away {word} of the books and then buys {new} new ones. How many books does the library have now?",
        f"{p.name} has {shelves} bookcases, each holding {per} books. {_cap(p.he)} donates {word} of all the "
        f"books and then receives {new} books as presents. How many books does {p.name} have?",
    ))


def _water_tank(d: Draw) -> str:
    p = d.person()
    rate = d.num("rate", 3, 12)
    minutes = d.num("minutes", 8, 39)
    have = d.num("already", 10, 89)
    cap = have + rate * minutes
    need = d.say("The tank needs @ more liters.", f"{cap} - {have}")
    d.say("Filling it takes @ minutes.", f"{need} / {rate}")
    return d.pick((
        f"A water tank holds {cap} liters and already has {have} liters in it. {p.name} fills it with a hose "
        f"that pours {rate} liters per minute. How many minutes does it take to fill the tank?",
        f"{p.name}'s pool can hold {cap} liters of water. There are {have} liters in it, and the pump adds "
        f"{rate} liters every minute. How many minutes until the pool is full?",
    ))


def _candy_share(d: Draw) -> str:
    p = d.person()
    bags = d.num("bags", 2, 6)
    per_bag = d.num("per_bag", 8, 39)
    friends = d.pick([f for f in range(2, 7) if bags * per_bag % f == 0])
    eats = d.num("eats", 1, bags * per_bag // friends - 1)
    t = d.say("There are @ candies.", f"{bags} * {per_bag}")
    each = d.say("Each friend gets @ candies.", f"{t} / {friends}")
    d.say("Each friend has @ candies left.", f"{each} - {eats}")
    return d.pick((
        f"{p.name} has {bags} bags with {per_bag} candies in each bag. {_cap(p.he)} shares all of them equally "
        f"among {friends} friends. Each friend eats {eats} candies. How many candies does each friend have left?",
        f"There are {per_bag} gummies in each of {p.name}'s {bags} bags. {_cap(p.he)} splits them evenly between "
        f"{friends} friends, and each friend eats {eats} right away. How many gummies does one friend have left?",
    ))


def _ages(d: Draw) -> str:
    p, q = d.person(), d.person()
    a, m, y = d.num("age", 6, 17), d.num("times", 2, 4), d.num("years", 3, 14)
    qa = d.say(f"{q.name} is @ years old.", f"{a} * {m}")
    later = d.say(f"In {y} years {q.name} will be @ years old.", f"{qa} + {y}")
    mine = d.say(f"{p.name} will be @ years old.", f"{a} + {y}")
    d.say("Their ages will add up to @.", f"{later} + {mine}")
    return d.pick((
        f"{p.name} is {a} years old. {q.name} is {m} times as old as {p.name}. In {y} years, what will be the sum "
        f"of their ages?",
        f"{q.name}'s age is {m} times {p.name}'s age, and {p.name} is {a}. What will {p.name}'s and {q.name}'s "
        f"ages add up to {y} years from now?",
    ))


def _recipe(d: Draw) -> str:
    p = d.person()
    flour, batch = d.num("flour", 2, 5), d.num("batch", 12, 35)
    k = d.num("times", 2, 6)
    sugar = d.num("sugar", 1, 3)
    d.say(f"{p.name} wants @ cookies, which is {k} batches.", f"{batch} * {k}")
    f = d.say(f"{_cap(p.he)} needs @ cups of flour.", f"{flour} * {k}")
    s = d.say(f"{_cap(p.he)} needs @ cups of sugar.", f"{sugar} * {k}")
    d.say("That is @ cups in all.", f"{f} + {s}")
    return d.pick((
        f"A recipe for {batch} cookies uses {flour} cups of flour and {sugar} cups of sugar. {p.name} wants to "
        f"bake {k} times as many cookies. How many cups of flour and sugar does {p.he} need altogether?",
        f"{p.name}'s cookie recipe makes {batch} cookies with {flour} cups of flour and {sugar} cups of sugar. "
        f"If {p.he} makes {k} batches, how many cups of flour and sugar will {p.he} use in total?",
    ))


def _egg_farm(d: Draw) -> str:
    p = d.person()
    hens = 12 * d.num("hens_dozens", 1, 8)
    eggs = d.num("eggs_per_hen", 1, 3)
    price = d.num("dozen_price", 2, 7)
    days = d.pick((5, 6, 7))
    per_day = d.say("The hens lay @ eggs a day.", f"{hens} * {eggs}")
    week = d.say(f"In {days} days they lay @ eggs.", f"{per_day} * {days}")
    dozens = d.say("That is @ dozen.", f"{week} / 12")
    d.say(f"{p.name} earns $@.", f"{dozens} * {price}")
    return d.pick((
        f"{p.name} has {hens} hens and each hen lays {eggs} eggs a day. {_cap(p.he)} sells the eggs for ${price} "
        f"a dozen. How much money does {p.he} make in {days} days?",
        f"On {p.name}'s farm, {hens} chickens each lay {eggs} eggs every day. Eggs sell for ${price} per dozen. "
        f"How many dollars does {p.name} earn from {days} days of eggs?",
    ))


def _running(d: Draw) -> str:
    p = d.person()
    mon = d.num("monday", 3, 14)
    less = d.num("less", 1, mon - 1)
    tue = d.say(f"On Tuesday {p.he} runs @ miles.", f"{mon} * 2")
    wed = d.say(f"On Wednesday {p.he} runs @ miles.", f"{tue} - {less}")
    d.say(f"{_cap(p.he)} runs @ miles in the three days.", f"{mon} + {tue} + {wed}")
    return d.pick((
        f"{p.name} runs {mon} miles on Monday. On Tuesday {p.he} runs twice as far, and on Wednesday {p.he} runs "
        f"{less} miles less than on Tuesday. How many miles does {p.he} run in the three days?",
        f"Training for a race, {p.name} ran {mon} miles on Monday, double that on Tuesday, and {less} fewer miles "
        f"than Tuesday on Wednesday. What is the total distance {p.he} ran, in miles?",
    ))


def _tickets(d: Draw) -> str:
    p = d.person()
    adults, a = d.num("adults", 2, 5), d.num("adult_price", 9, 24)
    kids, c = d.num("kids", 2, 6), d.num("kid_price", 4, 11)
    off = d.num("discount", 2, 9)
    x = d.say("Adult tickets cost $@.", f"{adults} * {a}")
    y = d.say("Child tickets cost $@.", f"{kids} * {c}")
    t = d.say("Before the coupon the tickets cost $@.", f"{x} + {y}")
    d.say(f"With the coupon {p.he} pays $@.", f"{t} - {off}")
    return d.pick((
        f"{p.name} buys {adults} adult tickets at ${a} each and {kids} child tickets at ${c} each for the zoo. "
        f"{_cap(p.he)} has a coupon for ${off} off the whole order. How much does {p.he} pay?",
        f"Movie tickets are ${a} for adults and ${c} for children. {p.name} takes {adults} adults and {kids} "
        f"children and uses a ${off} coupon. How many dollars does {p.name} pay?",
    ))


def _phone_plan(d: Draw) -> str:
    p = d.person()
    people = d.num("people", 2, 5)
    months = d.num("months", 3, 12)
    fee_share = d.num("fee_share", 5, 24)
    monthly = people * d.num("monthly_share", 6, 17)
    fee = people * fee_share
    plan = d.say(f"The plan costs $@ for {months} months.", f"{monthly} * {months}")
    total = d.say("With the fee it costs $@.", f"{plan} + {fee}")
    d.say("Each person pays $@.", f"{total} / {people}")
    return d.pick((
        f"{p.name} and {p.his} friends, {people} people in all, share a phone plan that costs ${monthly} a month. "
        f"There is also a one-time fee of ${fee}. They split the cost of {months} months and the fee evenly. "
        f"How much does each person pay?",
        f"A family plan costs ${monthly} per month plus a ${fee} activation fee. {p.name} splits the cost for "
        f"{months} months equally among {people} people. How many dollars does each person pay?",
    ))


def _homework(d: Draw) -> str:
    p = d.person()
    math = 2 * d.num("math_half", 8, 23)
    more = 2 * d.num("more_half", 3, 12)
    reading = d.say("Reading takes @ minutes.", f"{math} + {more}")
    science = d.say("Science takes @ minutes.", f"{reading} / 2")
    d.say(f"{_cap(p.he)} spends @ minutes on homework.", f"{math} + {reading} + {science}")
    return d.pick((
        f"{p.name} spends {math} minutes on math homework and {more} minutes more than that on reading. Science "
        f"takes half as long as reading. How many minutes does {p.name} spend on homework?",
        f"Tonight {p.name} did math for {math} minutes, reading for {more} minutes longer than math, and science "
        f"for half the reading time. How many minutes of homework did {p.he} do in all?",
    ))


def _parking(d: Draw) -> str:
    p = d.person()
    cars, bikes = d.num("cars", 10, 49), d.num("bikes", 5, 28)
    trikes = d.num("trikes", 2, 5)
    a = d.say("The cars have @ wheels.", f"{cars} * 4")
    b = d.say("The bikes have @ wheels.", f"{bikes} * 2")
    c = d.say("The tricycles have @ wheels.", f"{trikes} * 3")
    d.say("There are @ wheels in all.", f"{a} + {b} + {c}")
    return d.pick((
        f"{p.name} counts {cars} cars, {bikes} bicycles and {trikes} tricycles in a parking lot. How many wheels "
        f"are there altogether?",
        f"In the school parking lot there are {cars} cars, {bikes} bikes and {trikes} tricycles. {p.name} wants "
        f"to count all of their wheels. How many wheels are there?",
    ))


def _discount(d: Draw) -> str:
    p = d.person()
    price, off = d.num("price", 12, 51), d.num("off", 2, 9)
    n = d.num("count", 2, 7)
    ship = d.num("shipping", 4, 15)
    each = d.say("Each one costs $@.", f"{price} - {off}")
    t = d.say(f"{_cap(p.he)} pays $@ for them.", f"{each} * {n}")
    d.say(f"With shipping {p.he} pays $@.", f"{t} + {ship}")
    return d.pick((
        f"A board game costs ${price}, but this week it is ${off} off. {p.name} buys {n} games and pays ${ship} "
        f"for shipping. How much does {p.name} pay in total?",
        f"{p.name} orders {n} lamps online. Each lamp normally costs ${price} and is on sale for ${off} less. "
        f"Shipping is ${ship}. How many dollars does {p.he} spend?",
    ))


def _factory(d: Draw) -> str:
    p = d.person()
    rate, hours = d.num("per_hour", 12, 43), d.num("hours", 4, 9)
    days = d.num("days", 2, 6)
    bad = d.num("defective", 3, 30)
    day = d.say("The machine makes @ toys a day.", f"{rate} * {hours}")
    total = d.say(f"In {days} days it makes @ toys.", f"{day} * {days}")
    d.say("@ toys are good.", f"{total} - {bad}")
    return d.pick((
        f"A machine in {p.name}'s factory makes {rate} toys an hour. It runs {hours} hours a day for {days} days. "
        f"{bad} of the toys are broken. How many good toys does it make?",
        f"{p.name} runs a machine that builds {rate} toy cars per hour for {hours} hours each day. After {days} "
        f"days, {p.he} throws away {bad} cars that are broken. How many cars are left?",
    ))


def _stamps(d: Draw) -> str:
    p, q = d.person(), d.person()
    pages, per = d.num("pages", 3, 12), d.num("per_page", 6, 21)
    give = d.num("give", 2, pages * per // 3)
    buy = d.num("buy", 5, 36)
    t = d.say(f"{p.name} has @ stamps.", f"{pages} * {per}")
    left = d.say(f"After giving some away {p.he} has @ stamps.", f"{t} - {give}")
    d.say(f"Now {p.he} has @ stamps.", f"{left} + {buy}")
    return d.pick((
        f"{p.name} has a stamp album with {pages} full pages and {per} stamps on each page. {_cap(p.he)} gives "
        f"{give} stamps to {q.name} and then buys {buy} more. How many stamps does {p.name} have now?",
        f"{p.name}'s album holds {per} stamps on each of its {pages} pages, and every page is full. After "
        f"{p.he} gives {q.name} {give} stamps and buys another {buy}, how many stamps does {p.he} own?",
    ))


def _bus_trip(d: Draw) -> str:
    p = d.person()
    buses, seats = d.num("buses", 2, 6), d.num("seats", 20, 51)
    empty = d.num("empty", 1, 19)
    price = d.num("ticket", 3, 12)
    t = d.say("The buses have @ seats.", f"{buses} * {seats}")
    riders = d.say("@ people ride.", f"{t} - {empty}")
    d.say("The tickets bring in $@.", f"{riders} * {price}")
    return d.pick((
        f"{p.name} organizes a trip with {buses} buses. Each bus has {seats} seats, and {empty} seats are empty. "
        f"Every rider pays ${price}. How much money does {p.name} collect?",
        f"For the field trip, {buses} buses with {seats} seats each are booked. All seats but {empty} are taken, "
        f"and each passenger pays ${price}. How many dollars are collected for the trip?",
    ))


def _lemonade(d: Draw) -> str:
    p = d.person()
    sat, sun = d.num("saturday", 10, 49), d.num("sunday", 10, 49)
    price = d.num("cup_price", 2, 5)
    cost = d.num("supplies", 5, 24)
    cups = d.say(f"{p.name} sells @ cups.", f"{sat} + {sun}")
    money = d.say(f"{_cap(p.he)} takes in $@.", f"{cups} * {price}")
    d.say(f"{_cap(p.he)} makes a profit of $@.", f"{money} - {cost}")
    return d.pick((
        f"{p.name} sells {sat} cups of lemonade on Saturday and {sun} cups on Sunday for ${price} a cup. The "
        f"lemons and sugar cost {p.him} ${cost}. How much profit does {p.he} make?",
        f"At {p.his} lemonade stand, {p.name} sold {sat} cups on Saturday and {sun} cups on Sunday. Each cup was "
        f"${price}, and {p.he} spent ${cost} on supplies. What was {p.his} profit in dollars?",
    ))


def _aquarium(d: Draw) -> str:
    p = d.person()
    tanks, fish = d.num("tanks", 2, 9), d.num("fish", 5, 20)
    grams = d.num("grams", 2, 5)
    days = d.pick((5, 7, 10))
    n = d.say("There are @ fish.", f"{tanks} * {fish}")
    g = d.say("They eat @ grams a day.", f"{n} * {grams}")
    d.say(f"In {days} days they eat @ grams.", f"{g} * {days}")
    return d.pick((
        f"{p.name} has {tanks} fish tanks with {fish} fish in each tank. Every fish eats {grams} grams of food a "
        f"day. How many grams of food does {p.name} need for {days} days?",
        f"A pet store keeps {fish} goldfish in each of its {tanks} tanks, and {p.name} feeds each goldfish {grams} "
        f"grams a day. How many grams of food are used in {days} days?",
    ))


def _laps(d: Draw) -> str:
    p = d.person()
    track = 50 * d.num("track_50", 4, 11)
    laps, days = d.num("laps", 2, 9), d.num("days", 2, 6)
    walk = d.num("walk", 100, 899)
    day = d.say(f"{p.name} bikes @ meters a day.", f"{track} * {laps}")
    total = d.say(f"In {days} days {p.he} bikes @ meters.", f"{day} * {days}")
    d.say("With the walking, that is @ meters.", f"{total} + {walk}")
    return d.pick((
        f"A bike track is {track} meters long. {p.name} rides {laps} laps a day for {days} days and also walks "
        f"{walk} meters on the last day. How many meters does {p.he} travel in total?",
        f"{p.name} cycles {laps} laps of a {track}-meter track every day for {days} days. On top of that {p.he} "
        f"walks {walk} meters. How far does {p.name} go altogether, in meters?",
    ))


def _split_money(d: Draw) -> str:
    p, q = d.person(), d.person()
    small = d.num("smaller", 10, 69)
    more = d.num("more", 2, 29)
    total = 2 * small + more
    rest = d.say("Without the extra, the money is $@.", f"{total} - {more}")
    qs = d.say(f"{q.name} gets $@.", f"{rest} / 2")
    d.say(f"{p.name} gets $@.", f"{qs} + {more}")
    return d.pick((
        f"{p.name} and {q.name} share ${total}. {p.name} gets ${more} more than {q.name}. How much money does "
        f"{p.name} get?",
        f"Two friends, {p.name} and {q.name}, split ${total} so that {p.name} has ${more} more than {q.name}. "
        f"How many dollars does {p.name} end up with?",
    ))


def _marbles_game(d: Draw) -> str:
    p, q = d.person(), d.person()
    start = d.num("start", 20, 79)
    won = d.num("won", 3, 18)
    lost = d.num("lost", 1, won - 1)
    k = d.num("rounds", 2, 4)
    gain = d.say(f"{p.name} wins @ marbles.", f"{won} * {k}")
    loss = d.say(f"{_cap(p.he)} loses @ marbles.", f"{lost} * {k}")
    d.say(f"{_cap(p.he)} ends with @ marbles.", f"{start} + {gain} - {loss}")
    return d.pick((
        f"{p.name} starts with {start} marbles. In each of {k} games against {q.name}, {p.he} wins {won} marbles "
        f"and then loses {lost} marbles. How many marbles does {p.name} have at the end?",
        f"{p.name} has {start} marbles. {_cap(p.he)} plays {k} rounds with {q.name}; every round {p.he} gains "
        f"{won} marbles and gives back {lost}. How many marbles does {p.he} have after the last round?",
    ))


def _paint_fence(d: Draw) -> str:
    p = d.person()
    sections, per = d.num("sections", 6, 21), d.num("sq_per_section", 4, 11)
    per_can = d.pick([c for c in range(4, 31) if sections * per % c == 0])
    price = d.num("can_price", 9, 24)
    a = d.say("The fence is @ square meters.", f"{sections} * {per}")
    cans = d.say(f"{p.name} needs @ cans.", f"{a} / {per_can}")
    d.say("The paint costs $@.", f"{cans} * {price}")
    return d.pick((
        f"{p.name}'s fence has {sections} sections, and each section is {per} square meters. One can of paint "
        f"covers {per_can} square meters and costs ${price}. How much does {p.name} spend on paint?",
        f"{p.name} is painting a fence made of {sections} panels of {per} square meters each. A can covers "
        f"{per_can} square meters and costs ${price}. How many dollars will the paint cost?",
    ))


TemplateFn = Callable[[Draw], str]
TEMPLATES: dict[str, TemplateFn] = {
    "bake_sale": _bake_sale, "savings": _savings, "fruit_stand": _fruit_stand, "reading": _reading,
    "garden": _garden, "classroom": _classroom, "shopping": _shopping, "road_trip": _road_trip,
    "pizza_party": _pizza_party, "wages": _wages, "library": _library, "water_tank": _water_tank,
    "candy_share": _candy_share, "ages": _ages, "recipe": _recipe, "running": _running, "tickets": _tickets,
    "phone_plan": _phone_plan, "homework": _homework, "discount": _discount, "factory": _factory,
    "stamps": _stamps, "lemonade": _lemonade, "laps": _laps, "marbles_game": _marbles_game,
    "egg_farm": _egg_farm, "parking": _parking, "bus_trip": _bus_trip, "aquarium": _aquarium,
    "split_money": _split_money, "paint_fence": _paint_fence,
}
TEST_TEMPLATES: tuple[str, ...] = ("egg_farm", "parking", "bus_trip", "aquarium", "split_money", "paint_fence")
"""Templates held out of the train split (each reuses step kinds that train templates teach)."""
TRAIN_TEMPLATES: tuple[str, ...] = tuple(t for t in TEMPLATES if t not in TEST_TEMPLATES)


def _derive_seed(seed: int, split: str) -> int:
    """Stable per-split seed (hashlib, not hash(), so PYTHONHASHSEED does not matter)."""
    digest = hashlib.sha256(f"dllm-workload/gsm8k-format/{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _one(rng: random.Random, split: str, template: str) -> dict:
    d = Draw(rng, split)
    question = TEMPLATES[template](d)
    if not MIN_STEPS <= len(d.lines) <= MAX_STEPS:  # pragma: no cover - a template bug
        raise DllmError(f"template {template!r} wrote {len(d.lines)} steps; allowed {MIN_STEPS}-{MAX_STEPS}")
    answer = "\n".join(d.lines) + f"\n#### {d.last}"
    template_split = "test" if template in TEST_TEMPLATES else "train"
    meta = {"template": template, "template_split": template_split, "number_split": split,
            "steps": len(d.lines), "slots": d.slots}
    return {"question": question, "answer": answer, "meta": meta}


def generate(split: str, n: int, seed: int = 0, with_meta: bool = False) -> list[dict]:
    """``n`` records of ``split`` with distinct questions, deterministic in ``seed`` and prefix-stable in ``n``.

    Train: train templates, train number ranges. Test: held-out numbers throughout; a held-out template with
    probability ``TEST_TEMPLATE_SHARE``, else a train template.
    """
    check_choice("split", split, SPLITS)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise DllmError(f"n must be a non-negative integer, got {n!r}")
    rng = random.Random(_derive_seed(seed, split))
    seen: set[str] = set()
    out: list[dict] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 1000:
            raise DllmError(f"could not draw {n} distinct {split} GSM8K-format questions; ask for fewer")
        if split == "train":
            template = rng.choice(TRAIN_TEMPLATES)
        else:
            pool = TEST_TEMPLATES if rng.random() < TEST_TEMPLATE_SHARE else TRAIN_TEMPLATES
            template = rng.choice(pool)
        rec = _one(rng, split, template)
        if rec["question"] in seen:
            continue
        seen.add(rec["question"])
        out.append(rec if with_meta else {"question": rec["question"], "answer": rec["answer"]})
    return out
