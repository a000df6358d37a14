"""Write scripts/data/stories.txt: very simple children's stories from a seeded story grammar.

    python scripts/make_corpus.py [--out scripts/data/stories.txt] [--bytes 1500000] [--seed 0]

The corpus the demo's tiny language model is trained on (scripts/train_tiny_llama.py): short sentences and
a small vocabulary, in the style of TinyStories, but every word list and template is written here, so the
project needs no download. Each story is an opening, one of ten plots (a lost toy, sharing, an animal in
trouble, a scary night, a rainy day, a warning not heeded, a new friend, making something, trying again, a
present) and an ending; paragraphs are lines, stories are separated by a blank line. The same seed and size
give the same bytes.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

GIRLS = ["Lily", "Mia", "Sue", "Amy", "Lucy", "Emma", "Anna", "Zoe", "Kate", "Ella", "Rosa", "Nina", "Ruby",
         "Jane", "Sara", "Molly", "Daisy", "Lola", "Ivy", "Bella"]
BOYS = ["Tim", "Ben", "Tom", "Max", "Sam", "Leo", "Jack", "Bob", "Jake", "Finn", "Dan", "Joe", "Timmy",
        "Billy", "Oscar", "Noah", "Eli", "Ted", "Ollie", "Kai"]
ANIMALS = ["cat", "dog", "bunny", "bear", "duck", "frog", "mouse", "fox", "pig", "owl", "puppy", "kitten"]
ANIMAL_NAMES = ["Spot", "Fluffy", "Max", "Coco", "Buddy", "Pip", "Hoppy", "Whiskers", "Bongo", "Sunny"]
KID_WORDS = ["little", "kind", "happy", "small", "brave", "curious", "friendly", "shy", "silly", "sweet"]
ANIMAL_WORDS = ["little", "fluffy", "small", "happy", "soft", "funny", "brown", "white", "gray", "tiny"]

TOYS = ["ball", "red ball", "kite", "doll", "teddy bear", "toy car", "toy boat", "blue truck", "yellow hat",
        "picture book", "train", "robot", "balloon", "shiny shell", "drum", "puzzle", "toy plane", "wagon"]
PLACES = ["park", "garden", "forest", "beach", "farm", "lake", "hill", "yard", "meadow", "zoo", "pond",
          "river", "playground", "woods"]
HOMES = ["small house", "big house", "little house", "blue house", "house with a red door", "cozy home"]
LIKES = ["play with {his} {toy}", "run in the grass", "sing songs", "draw pictures", "jump in puddles",
         "read books", "look at the stars", "build towers with blocks", "dig in the sand", "pick flowers",
         "chase butterflies", "climb trees", "dance in the sun", "play hide and seek", "help {his} mom"]
HIDING_SPOTS = ["under the bed", "behind the big chair", "in the toy box", "under a pile of leaves",
                "next to the door", "under the table", "in the tall grass", "behind a tree", "in the car",
                "under a blanket", "near the swing", "in a basket"]
LOOK_SPOTS = ["under the bed", "in the kitchen", "behind the couch", "in the yard", "in the closet",
              "under the table", "in the garden", "on the shelf"]
TRAPS = [("a bird", "stuck in a bush"), ("a kitten", "stuck up a tree"), ("a puppy", "stuck in the mud"),
         ("a duck", "caught in a net"), ("a frog", "stuck in a jar"), ("a bunny", "stuck under a fence"),
         ("a little fish", "stuck in a small puddle"), ("a baby bird", "on the ground under its nest")]
FIXES = {"stuck in a bush": "pulled the branches apart very gently",
         "stuck up a tree": "asked {his} dad to bring a ladder",
         "stuck in the mud": "pulled it out with both hands",
         "caught in a net": "took the net off one string at a time",
         "stuck in a jar": "tipped the jar over slowly",
         "stuck under a fence": "dug a little hole under the fence",
         "stuck in a small puddle": "carried it to the pond in a cup",
         "on the ground under its nest": "put it back in the nest with a soft glove"}
NOISES = [("a loud noise", "the wind"), ("a scratching sound", "a tree branch on the window"),
          ("a big bang", "the door"), ("a funny sound", "the cat"), ("a tap on the window", "the rain"),
          ("a creaky sound", "the old floor"), ("a soft thump", "a book that fell off the shelf")]
INSIDE_FUN = ["built a fort with blankets and pillows", "baked cookies in the kitchen",
              "painted a picture of the sun", "made a tower out of boxes", "played a game with cards",
              "made puppets out of old socks"]
WARNINGS = [("touch the hot stove", "touched the stove", "burned {his} finger", "put cold water on it"),
            ("go near the pond", "went near the pond", "fell in the water and got all wet",
             "wrapped {him} in a warm towel"),
            ("climb the tall tree", "climbed the tall tree", "fell down and hurt {his} knee",
             "put a bandage on it"),
            ("play with the glass vase", "played with the vase", "broke it into many pieces",
             "cleaned up the pieces"),
            ("eat all the candy", "ate all the candy", "got a bad tummy ache", "gave {him} some water"),
            ("run in the street", "ran near the street", "almost got hit by a bike", "held {his} hand")]
GAMES = ["tag", "hide and seek", "catch", "jump rope", "a racing game", "pretend pirates"]
MAKES = [("bake a cake", "flour, eggs and sugar", "mixed and mixed", "cake", "yummy"),
         ("build a sandcastle", "a bucket and a shovel", "packed the sand", "sandcastle", "tall"),
         ("plant a seed", "a pot and some dirt", "watered it every day", "flower", "pretty"),
         ("make a kite", "paper, sticks and string", "cut and glued", "kite", "colorful"),
         ("make soup", "carrots, peas and water", "stirred the pot", "soup", "warm"),
         ("build a birdhouse", "wood and nails", "hammered and painted", "birdhouse", "nice")]
TRIES = [("climb the big hill", "slipped and slid back down", "reached the top"),
         ("fly {his} kite", "watched it fall to the ground", "made it fly high in the sky"),
         ("ride {his} new bike", "wobbled and fell over", "rode all the way down the street"),
         ("catch the ball", "dropped it", "caught it with both hands"),
         ("swim in the lake", "splashed and got scared", "swam like a little fish"),
         ("jump over the big puddle", "landed right in the middle", "jumped all the way over")]
GIFTS = [("drew a picture of the two of them", "picture"), ("made a card with a big heart", "card"),
         ("picked a bunch of flowers", "flowers"), ("made a necklace out of beads", "necklace"),
         ("baked a little cake", "cake"), ("found a shiny stone", "stone")]
PARENTS = [("Mom", "she"), ("Dad", "he"), ("Grandma", "she"), ("Grandpa", "he")]
HAPPY = ["happy", "very happy", "so happy", "glad"]
SAD = ["sad", "very sad", "upset"]


@dataclass(frozen=True)
class Character:
    name: str
    noun: str
    he: str
    his: str
    him: str

    @property
    def He(self) -> str:  # noqa: N802 - sentence-initial form, used as {a.He} in templates
        return self.he.capitalize()

    @property
    def His(self) -> str:  # noqa: N802
        return self.his.capitalize()


def with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def make_character(rng: random.Random, avoid: str = "") -> Character:
    kind = rng.choice(["girl", "girl", "boy", "boy", "animal"])
    if kind == "animal":
        name = rng.choice([n for n in ANIMAL_NAMES if n != avoid])
        he, his, him = rng.choice([("he", "his", "him"), ("she", "her", "her")])
        return Character(name, rng.choice(ANIMALS), he, his, him)
    if kind == "girl":
        return Character(rng.choice([n for n in GIRLS if n != avoid]), "girl", "she", "her", "her")
    return Character(rng.choice([n for n in BOYS if n != avoid]), "boy", "he", "his", "him")


class Teller:
    """Fills a story's templates (`{a.name}`, `{b.He}`, `{toy}`); a tuple of templates is a choice of one."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, options):
        return self.rng.choice(options)

    def say(self, template, **words) -> str:
        if isinstance(template, tuple):
            template = self.pick(template)
        text = template.format(**words)
        return text[0].upper() + text[1:]

    def tell(self, templates, **words) -> list[str]:
        return [self.say(template, **words) for template in templates]


def opening(t: Teller, a: Character) -> list[str]:
    words = KID_WORDS if a.noun in ("girl", "boy") else ANIMAL_WORDS
    like = t.pick(LIKES).format(his=a.his, toy=t.pick(TOYS))
    return t.tell([("Once upon a time, there was {w} named {a.name}.",
                    "Once upon a time, in a {home}, there lived {w} named {a.name}.",
                    "There was once {w} named {a.name}.",
                    "One day, {w} named {a.name} woke up with a big smile.",
                    "{a.name} was {w} who lived in a {home}."),
                   ("{a.He} liked to {like}.", "{a.He} loved to {like} every day.",
                    "Every day, {a.he} liked to {like}.", "{a.His} favorite thing was to {like}.")],
                  a=a, w=with_article(f"{t.pick(words)} {a.noun}"), home=t.pick(HOMES), like=like)


def lost_toy(t: Teller, a: Character, b: Character) -> list[str]:
    spot1, spot2 = t.rng.sample(LOOK_SPOTS, 2)
    return t.tell([
        ("One day, {a.name} could not find {a.his} {toy}.", "One morning, {a.his} {toy} was gone."),
        "{a.He} looked {spot1}. {a.He} looked {spot2}. But the {toy} was not there.",
        ("{a.name} felt {sad}. {a.He} sat down and began to cry.", "{a.name} was {sad}. Tears came to {a.his} eyes."),
        "{a.His} friend {b.name} saw {a.him} and asked, \"Why are you {sad}, {a.name}?\"",
        ("\"I lost my {toy},\" {a.name} said.", "\"I cannot find my {toy},\" said {a.name}."),
        ("\"Do not worry. I will help you find it,\" said {b.name}.", "\"Let us look together,\" said {b.name}."),
        "They looked everywhere. At last, {b.name} found the {toy} {found}.",
        "{a.name} was {happy}. \"Thank you, {b.name}!\" {a.he} said, and gave {b.him} a big hug."],
        a=a, b=b, toy=t.pick(TOYS), spot1=spot1, spot2=spot2, found=t.pick(HIDING_SPOTS), sad=t.pick(SAD),
        happy=t.pick(HAPPY))


def sharing(t: Teller, a: Character, b: Character) -> list[str]:
    return t.tell([
        ("{a.name} had a new {toy}. {a.He} took it to the {place} to play.",
         "{a.name} got a new {toy} from {a.his} mom. {a.He} went to the {place} to play with it."),
        "At the {place}, {a.he} met {b.name}. {b.name} looked at the {toy} and smiled.",
        ("\"Can I play with your {toy}?\" asked {b.name}.", "\"Wow! May I play with it too?\" asked {b.name}."),
        ("\"No, it is mine!\" said {a.name}, and {a.he} held the {toy} close.",
         "\"No! You can not have it,\" said {a.name}."),
        "{b.name} was {sad} and walked away. Now {a.name} was all alone.",
        "Playing alone was not fun. {a.name} thought about {b.name} and felt bad.",
        "{a.He} ran to {b.name} and said, \"I am sorry. Let us play with my {toy} together.\"",
        ("{b.name} smiled. They played with the {toy} all day, and they were both {happy}.",
         "{b.name} said, \"Thank you!\" They took turns with the {toy}, and it was much more fun.")],
        a=a, b=b, toy=t.pick(TOYS), place=t.pick(PLACES), sad=t.pick(SAD), happy=t.pick(HAPPY))


def rescue(t: Teller, a: Character, b: Character) -> list[str]:
    animal, trouble = t.pick(TRAPS)
    return t.tell([
        ("One sunny day, {a.name} went for a walk to the {place}.", "One day, {a.name} was playing at the {place}."),
        "{a.He} heard a little cry. It was {animal}. It was {trouble}.",
        ("The poor animal was scared. \"Do not be afraid,\" said {a.name}. \"I will help you.\"",
         "\"Oh no, you poor thing!\" said {a.name}. \"I will help you.\""),
        ("{a.name} thought and thought. Then {a.he} {fix}.", "{a.name} had an idea. {a.He} {fix}."),
        ("Soon the animal was free! It jumped up and down to say thank you.",
         "At last the animal was safe. It looked at {a.name} with happy eyes."),
        "{a.name} felt warm inside. {a.He} was {happy} that {a.he} could help."],
        a=a, animal=animal, trouble=trouble, fix=FIXES[trouble].format(his=a.his), place=t.pick(PLACES),
        happy=t.pick(HAPPY))


def scary_night(t: Teller, a: Character, b: Character) -> list[str]:
    noise, cause = t.pick(NOISES)
    parent, she = t.pick(PARENTS)
    return t.tell([
        "One night, {a.name} was in bed. Everything was dark and quiet.",
        ("Then {a.he} heard {noise}. {a.name} was scared and pulled the blanket over {a.his} head.",
         "Suddenly, {a.he} heard {noise}. {a.name} was so scared that {a.he} could not move."),
        "\"{P}!\" {a.he} called. {P} came in and turned on the light.",
        "\"What is wrong?\" asked {P}. \"I heard {noise},\" said {a.name}.",
        "{P} looked around and smiled. \"It is only {cause},\" {she} said.",
        "{a.name} laughed. It was not scary at all. {P} gave {a.him} a kiss, and {a.he} fell asleep."],
        a=a, noise=noise, cause=cause, P=parent, she=she)


def rainy_day(t: Teller, a: Character, b: Character) -> list[str]:
    parent, _ = t.pick(PARENTS)
    return t.tell([
        "One morning, {a.name} wanted to go to the {place} with {a.his} friend {b.name}.",
        ("But when {a.he} looked outside, it was raining. {a.name} was {sad}.",
         "But the sky was gray, and soon it began to rain. {a.name} felt {sad}."),
        ("{P} said, \"We can have fun inside too.\"", "\"Do not be sad,\" said {P}. \"I have an idea.\""),
        "So {a.name} and {b.name} {fun}. They laughed and had so much fun.",
        "Soon the rain stopped. The sun came out, and there was a big rainbow in the sky.",
        "\"Look!\" said {b.name}. {a.name} was {happy}. It was a good day after all."],
        a=a, b=b, fun=t.pick(INSIDE_FUN), place=t.pick(PLACES), P=parent, sad=t.pick(SAD), happy=t.pick(HAPPY))


def warning(t: Teller, a: Character, b: Character) -> list[str]:
    rule, broke, hurt, help_ = (s.format(his=a.his, him=a.him) for s in t.pick(WARNINGS))
    parent, she = t.pick(PARENTS)
    return t.tell([
        ("{P} said, \"{a.name}, please do not {rule}.\"", "\"Remember, do not {rule},\" {P} told {a.name}."),
        "But {a.name} did not listen. When nobody was looking, {a.he} {broke}.",
        "Oh no! {a.He} {hurt}. {a.name} started to cry.",
        "{P} came quickly. {She} {help} and hugged {a.him}.",
        "\"I am sorry,\" said {a.name}. \"I should have listened.\"",
        "{P} smiled. \"I know. I am glad you are okay,\" {she} said.",
        "From that day on, {a.name} always listened to {P}."],
        a=a, rule=rule, broke=broke, hurt=hurt, help=help_, P=parent, she=she, She=she.capitalize())


def new_friend(t: Teller, a: Character, b: Character) -> list[str]:
    return t.tell([
        "One day, {a.name} went to the {place}.",
        ("There {a.he} saw {b.name}, who was sitting all alone.", "There {a.he} saw {b.name} sitting by a tree."),
        "{a.name} walked over and said, \"Hi, I am {a.name}. What is your name?\"",
        "\"I am {b.name},\" said {b.name} in a small voice. \"I am new here.\"",
        "\"Do you want to play {game} with me?\" asked {a.name}.",
        ("{b.name} smiled a big smile. \"Yes, I would love to!\"", "\"Yes, please!\" said {b.name}."),
        "They played {game} until the sun went down. {b.name} was not alone anymore.",
        "{a.name} and {b.name} became best friends, and they were {happy}."],
        a=a, b=b, place=t.pick(PLACES), game=t.pick(GAMES), happy=t.pick(HAPPY))


def making(t: Teller, a: Character, b: Character) -> list[str]:
    goal, stuff, work, thing, adjective = t.pick(MAKES)
    parent, _ = t.pick(PARENTS)
    return t.tell([
        "One day, {a.name} wanted to {goal}. {a.He} asked {P} to help.",
        "They got {stuff}. {a.name} and {P} {work}.",
        "It was hard work, and it was a little messy. But {a.name} did not give up.",
        ("At last, the {thing} was done. It was very {adj}!", "Soon the {thing} was ready. It was so {adj}!"),
        "{a.name} showed the {thing} to everyone. {a.He} was {happy} and proud."],
        a=a, goal=goal, stuff=stuff, work=work, thing=thing, adj=adjective, P=parent, happy=t.pick(HAPPY))


def trying(t: Teller, a: Character, b: Character) -> list[str]:
    goal, fail, win = (s.format(his=a.his) for s in t.pick(TRIES))
    return t.tell([
        "{a.name} wanted to {goal}. {a.His} friend {b.name} came to watch.",
        "{a.name} tried, but {a.he} {fail}. {a.He} tried again, and again {a.he} {fail}.",
        "{a.name} felt like giving up. {b.name} said, \"Do not give up, {a.name}. You can do it!\"",
        "{a.name} took a deep breath and tried one more time.",
        "This time, {a.he} {win}! \"I did it!\" {a.he} shouted.",
        "{b.name} clapped and cheered. {a.name} was {happy}."],
        a=a, b=b, goal=goal, fail=fail, win=win, happy=t.pick(HAPPY))


def present(t: Teller, a: Character, b: Character) -> list[str]:
    made, thing = t.pick(GIFTS)
    return t.tell([
        "Tomorrow was the birthday of {a.his} friend {b.name}. {a.name} wanted to give {b.him} something special.",
        "{a.He} did not have any money. So {a.he} {made}.",
        "The next day, {a.name} gave the {thing} to {b.name}.",
        ("\"Happy birthday, {b.name}!\" said {a.name}.", "\"This is for you, {b.name}. Happy birthday!\""),
        "{b.name} looked at the {thing} and smiled. \"Thank you so much!\"",
        "{a.name} was {happy}. A gift from the heart is the best gift of all."],
        a=a, b=b, made=made, thing=thing, happy=t.pick(HAPPY))


PLOTS = [lost_toy, sharing, rescue, scary_night, rainy_day, warning, new_friend, making, trying, present]
LESSONS = {lost_toy: "Good friends help each other.", sharing: "Sharing is caring.",
           rescue: "It is good to help others.", scary_night: "There is nothing to be afraid of in the dark.",
           rainy_day: "A rainy day can be fun too.", warning: "It is important to listen to your mom and dad.",
           new_friend: "Being kind makes new friends.", making: "Hard work makes good things.",
           trying: "If you keep trying, you can do it.", present: "Giving makes you happy too."}
PLOTS_WITH_FRIEND = {lost_toy, sharing, rainy_day, new_friend, trying, present}


def ending(t: Teller, a: Character, b: Character, plot) -> list[str]:
    endings = ["That night, {a.name} went to bed with a big smile.", "{a.name} would always remember this day.",
               "It was the best day ever.", "{a.name} learned something that day. " + LESSONS[plot]]
    if plot in PLOTS_WITH_FRIEND:
        endings.append("From that day on, {a.name} and {b.name} were the best of friends.")
    return [t.say(t.pick(endings), a=a, b=b)]


def story(rng: random.Random) -> str:
    t = Teller(rng)
    hero = make_character(rng)
    friend = make_character(rng, avoid=hero.name)
    plot = t.pick(PLOTS)
    sentences = opening(t, hero) + plot(t, hero, friend) + ending(t, hero, friend, plot)
    # Paragraphs of two or three sentences, as young children's books print them.
    paragraphs, i = [], 0
    while i < len(sentences):
        size = rng.choice([2, 2, 3])
        paragraphs.append(" ".join(sentences[i:i + size]))
        i += size
    return "\n".join(paragraphs)


def corpus(n_bytes: int, seed: int) -> str:
    rng = random.Random(seed)
    stories, size = [], 0
    while size < n_bytes:
        stories.append(story(rng))
        size += len(stories[-1]) + 2
    return "\n\n".join(stories) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "stories.txt")
    parser.add_argument("--bytes", type=int, default=1_500_000, help="stop after this much text")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    text = corpus(args.bytes, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8", newline="\n")
    stories = text.count("\n\n") + 1
    print(f"{args.out}: {stories} stories, {len(text.encode())} bytes")


if __name__ == "__main__":
    main()
