"""Procedurally generated children's stories: the default corpus that needs no network or files.

Story `i` depends only on `(seed, i)` (its own RNG seeded from both), so any rank or worker can
produce any story directly: resume and distribution need no coordination.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from diffusionlm.data import builtin_words as W


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


class _Cast:
    """The people and things one story is about, drawn once so pronouns and names stay consistent."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        girl = rng.random() < 0.5
        self.hero = rng.choice(W.GIRL_NAMES if girl else W.BOY_NAMES)
        self.he, self.his, self.him = ("she", "her", "her") if girl else ("he", "his", "him")
        self.friend = rng.choice([n for n in W.GIRL_NAMES + W.BOY_NAMES if n != self.hero])
        self.animal = rng.choice(W.ANIMALS)
        self.pet = rng.choice(W.ANIMAL_NAMES)
        self.adj = rng.choice(W.ADJECTIVES)
        self.place = rng.choice(W.PLACES)
        self.place2 = rng.choice([p for p in W.PLACES if p != self.place])
        self.obj = rng.choice(W.OBJECTS)
        self.color = rng.choice(W.COLORS)
        self.food = rng.choice(W.FOODS)
        self.weather = rng.choice(W.WEATHER)
        self.helper = rng.choice(W.HELPERS)
        self.activity = rng.choice(W.ACTIVITIES)
        self.good = rng.choice(W.FEELINGS_GOOD)
        self.bad = rng.choice(W.FEELINGS_BAD)

    def say(self) -> str:
        return self.rng.choice(W.SAY_VERBS)

    def cap(self, s: str) -> str:
        return s[0].upper() + s[1:]


def _intro(c: _Cast) -> list[str]:
    r = c.rng
    opening = r.choice(W.TIMES)
    forms = [
        f"{opening}, there was a {c.adj} {r.choice(['girl', 'boy', 'child', 'kid'])} named {c.hero}.",
        f"{opening}, {c.hero} went to the {c.place}.",
        f"{opening}, a {c.adj} {c.animal} named {c.pet} lived near the {c.place}.",
        f"{c.hero} was a {c.adj} child who loved to {c.activity}.",
    ]
    lines = [r.choice(forms)]
    if r.random() < 0.6:
        sky = r.choice(["blue", "gray", "full of clouds", "bright"])
        lines.append(f"It was a {c.weather} day, and the sky was {sky}.")
    return lines


def _plot_lost_object(c: _Cast) -> list[str]:
    return [
        f"{c.hero} had {_article(c.color)} {c.obj} that {c.he} loved very much.",
        f"One day, {c.he} could not find the {c.obj} anywhere.",
        f"{c.hero} felt {c.bad}. \"Where is my {c.obj}?\" {c.he} {c.say()}.",
        f"{c.cap(c.he)} looked under the bed, in the {c.place2}, and behind the door.",
        f"Then {c.friend} came to help. \"Let's look together,\" {c.friend} said.",
        f"At last they found the {c.obj} next to {_article(c.food)} in the kitchen.",
        f"{c.hero} was so {c.good}. \"Thank you, {c.friend}!\" {c.he} {c.say()}.",
    ]


def _plot_new_friend(c: _Cast) -> list[str]:
    return [
        f"At the {c.place}, {c.hero} saw a {c.adj} {c.animal} sitting all alone.",
        f"\"Hello, {c.animal}! Why are you {c.bad}?\" {c.hero} {c.say()}.",
        f"\"I have no one to play with,\" said the {c.animal}.",
        f"\"You can play with me!\" said {c.hero}. \"Let's {c.activity}.\"",
        f"The {c.animal} smiled, and they played all afternoon.",
        f"{c.hero} named the {c.animal} {c.pet}, and {c.pet} felt {c.good}.",
    ]


def _plot_sharing(c: _Cast) -> list[str]:
    return [
        f"{c.hero} had {_article(c.food)} for a snack at the {c.place}.",
        f"{c.friend} looked at the {c.food} and felt {c.bad}, because {c.friend} had no snack.",
        f"{c.hero} thought for a moment. Then {c.he} broke the {c.food} in two.",
        f"\"Here, you can have half,\" {c.hero} {c.say()}.",
        f"{c.friend} smiled a big smile. \"You are so kind!\"",
        f"The {c.food} tasted even better when they shared it.",
    ]


def _plot_fear(c: _Cast) -> list[str]:
    thing = c.rng.choice(
        ["the dark", "the big dog", "the tall slide", "the deep water", "the loud storm", "the old cave"]
    )
    return [
        f"{c.hero} was scared of {thing}.",
        f"\"I do not want to go,\" {c.he} {c.say()} to {c.his} {c.helper}.",
        f"{c.cap(c.his)} {c.helper} held {c.his} hand and said, \"I will be right here with you.\"",
        f"{c.hero} took a deep breath and counted to {c.rng.choice(['three', 'five', 'ten'])}.",
        f"{c.cap(c.he)} was brave, and {thing} was not so bad after all.",
        f"Now {c.hero} felt {c.good} and strong.",
    ]


def _plot_helping(c: _Cast) -> list[str]:
    return [
        f"On the way to the {c.place}, {c.hero} heard {c.rng.choice(W.SOUNDS)}.",
        f"A {c.adj} {c.animal} was stuck in {_article(c.rng.choice(['bush', 'hole', 'fence', 'tree', 'puddle']))}.",
        f"\"Help me, please!\" cried the {c.animal}.",
        f"{c.hero} used {c.his} {c.obj} to help the {c.animal} get out.",
        f"The {c.animal} jumped up and down. \"Thank you, {c.hero}! You saved me!\"",
        f"{c.hero} felt {c.good} that {c.he} could help.",
    ]


def _plot_adventure(c: _Cast) -> list[str]:
    found = c.rng.choice(["secret door", "hidden path", "shiny stone", "little house", "old tree"])
    return [
        f"{c.hero} and {c.friend} wanted to go on an adventure.",
        f"They packed {_article(c.food)}, a map, and {c.hero}'s {c.obj}.",
        f"They walked past the {c.place} and all the way to the {c.place2}.",
        f"There they found {_article(found)}.",
        f"\"Wow, look at that!\" {c.friend} {c.say()}.",
        f"They explored until it was time to go home, and they told {c.his} {c.helper} everything.",
    ]


def _plot_baking(c: _Cast) -> list[str]:
    steps = c.rng.sample(["flour", "eggs", "milk", "sugar", "butter", "honey", "berries", "salt"], 3)
    treat = c.rng.choice(["cake", "pie", "batch of cookies", "loaf of bread"])
    return [
        f"{c.hero} wanted to bake {_article(treat)} with {c.his} {c.helper}.",
        f"They put {steps[0]}, {steps[1]} and {steps[2]} in a big bowl.",
        f"{c.hero} mixed and mixed until {c.his} arms were tired.",
        f"Oops! Some {steps[0]} fell on the floor, and {c.pet} the {c.animal} licked it up.",
        f"Everyone laughed. \"Silly {c.pet}!\" {c.hero} {c.say()}.",
        f"When it was done, it smelled so good that the whole house felt {c.good}.",
    ]


def _plot_argument(c: _Cast) -> list[str]:
    return [
        f"{c.hero} and {c.friend} both wanted the {c.color} {c.obj}.",
        f"\"It is mine!\" said {c.hero}. \"No, it is mine!\" said {c.friend}.",
        f"They pulled and pulled, and the {c.obj} {c.rng.choice(['broke', 'fell in the mud', 'rolled away'])}.",
        f"Both of them felt {c.bad}.",
        f"\"I am sorry,\" {c.hero} {c.say()}. \"Me too,\" said {c.friend}.",
        "They decided to take turns, and soon they were playing together again.",
    ]


def _plot_weather(c: _Cast) -> list[str]:
    w = c.rng.choice(["rain", "snow", "wind", "sun"])
    did = {
        "rain": "jumped in every puddle and got very wet",
        "snow": "made a snowman with a carrot nose",
        "wind": "watched the leaves dance in the air",
        "sun": "played in the warm grass",
    }[w]
    return [
        f"When {c.hero} woke up, there was {w} outside.",
        f"\"Can I go out and play?\" {c.he} asked {c.his} {c.helper}.",
        f"\"Yes, but wear your {c.rng.choice(['coat', 'boots', 'hat', 'scarf'])},\" said {c.his} {c.helper}.",
        f"{c.hero} ran to the {c.place} and {did}.",
        f"{c.friend} came too, with {c.pet} the {c.animal}.",
        f"It was the best {w} day ever.",
    ]


def _plot_gift(c: _Cast) -> list[str]:
    return [
        f"It was {c.friend}'s birthday, and {c.hero} wanted to give a present.",
        f"{c.hero} did not have money, so {c.he} made {_article(c.color)} {c.obj} out of paper and glue.",
        f"{c.cap(c.he)} worried that {c.friend} would not like it.",
        f"But when {c.friend} opened it, {c.friend} {c.rng.choice(['clapped', 'smiled', 'jumped', 'cheered'])}.",
        f"\"This is the best gift, because you made it for me!\" {c.friend} {c.say()}.",
    ]


def _plot_race(c: _Cast) -> list[str]:
    other = c.rng.choice([a for a in W.ANIMALS if a != c.animal])
    return [
        f"The {c.animal} and the {other} had a race to the {c.place}.",
        f"The {other} was fast and ran ahead. \"I will win!\" it {c.say()}.",
        f"The {c.animal} was slow, but it did not stop.",
        f"The {other} got tired and took a nap under a tree.",
        f"The {c.animal} kept going, step by step, and won the race.",
        f"{c.hero} watched and clapped. \"Slow and steady!\" {c.he} {c.say()}.",
    ]


def _plot_bedtime(c: _Cast) -> list[str]:
    return [
        f"It was time for bed, but {c.hero} was not sleepy.",
        f"\"One more story, please,\" {c.he} asked {c.his} {c.helper}.",
        f"{c.cap(c.his)} {c.helper} read a book about {_article(c.adj)} {c.animal} who lived in a {c.place}.",
        f"{c.hero} held {c.his} {c.obj} close and listened.",
        f"Soon {c.his} eyes were heavy, and {c.he} was fast asleep.",
        f"In {c.his} dream, {c.he} and the {c.animal} went to the {c.place2} together.",
    ]


def _plot_garden(c: _Cast) -> list[str]:
    plant = c.rng.choice(["sunflower", "tomato", "bean", "pumpkin", "rose", "carrot"])
    return [
        f"{c.hero} planted a tiny {plant} seed in the {c.rng.choice(['garden', 'backyard', 'pot by the window'])}.",
        f"Every day, {c.he} gave it water and said, \"Grow, little seed!\"",
        f"For many days, nothing happened, and {c.hero} felt {c.bad}.",
        "Then one morning, a small green leaf came out of the dirt.",
        f"{c.hero} was so {c.good} that {c.he} ran to tell {c.friend}.",
        f"By summer the {plant} was taller than {c.hero}.",
    ]


_PLOTS: tuple[Callable[[_Cast], list[str]], ...] = (
    _plot_lost_object, _plot_new_friend, _plot_sharing, _plot_fear, _plot_helping, _plot_adventure,
    _plot_baking, _plot_argument, _plot_weather, _plot_gift, _plot_race, _plot_bedtime, _plot_garden,
)


def generate_story(seed: int, index: int) -> str:
    """The `index`-th story of corpus `seed`: a few short paragraphs with dialogue."""
    rng = random.Random(f"diffusionlm-builtin:{seed}:{index}")
    c = _Cast(rng)
    lines = _intro(c) + rng.choice(_PLOTS)(c)
    if rng.random() < 0.3:  # some stories run two episodes, so lengths vary
        lines += ["", "The next day, something else happened.", *rng.choice(_PLOTS)(c)]
    ending = rng.choice(W.ENDINGS).format(a=c.hero, b=c.friend, place=c.place)
    lines.append(ending)
    if rng.random() < 0.4:
        lines.append(rng.choice(W.MORALS))
    return " ".join(lines).replace("  ", "\n\n").strip()
