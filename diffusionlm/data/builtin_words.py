"""Word lists for the built-in story generator (kept apart so the generator stays readable).

Nouns are stored without articles; the generator adds "a"/"the". Lists are long on purpose: a tiny
model should need a few thousand steps to learn the combinations.
"""

GIRL_NAMES = (
    "Lily", "Mia", "Sue", "Anna", "Lucy", "Emma", "Zoe", "Ruby", "Ella", "Nora", "Rosa", "Maya", "Ivy",
    "Lena", "Clara", "Daisy", "Hana", "Amy", "Grace", "Olive", "Sara", "Tia", "June", "Kira", "Alice",
    "Bella", "Poppy", "Nina", "Layla", "Wren",
)
BOY_NAMES = (
    "Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Finn", "Noah", "Omar", "Theo", "Eli", "Kai", "Luca",
    "Hugo", "Ravi", "Owen", "Milo", "Jonah", "Felix", "Arlo", "Ezra", "Jude", "Otto", "Pablo", "Sami",
    "Toby", "Adam", "Ned", "Rex",
)
ANIMALS = (
    "cat", "dog", "bunny", "bear", "fox", "owl", "duck", "frog", "mouse", "turtle", "lion", "puppy",
    "kitten", "squirrel", "bird", "horse", "pig", "cow", "goat", "sheep", "hedgehog", "deer", "monkey",
    "elephant", "giraffe", "penguin", "whale", "dolphin", "ladybug", "butterfly", "bee", "snail", "crab",
    "hen", "chick", "badger", "otter", "raccoon", "panda", "koala",
)
ANIMAL_NAMES = (
    "Spot", "Fluffy", "Bubbles", "Pip", "Whiskers", "Coco", "Patch", "Nibbles", "Sunny", "Pebble", "Biscuit",
    "Ziggy", "Button", "Mittens", "Hopper", "Peanut", "Ginger", "Dot", "Tango", "Muffin",
)
ADJECTIVES = (
    "little", "big", "happy", "sad", "brave", "shy", "kind", "silly", "sleepy", "curious", "friendly",
    "tiny", "gentle", "funny", "clever", "grumpy", "quiet", "loud", "fast", "slow", "proud", "helpful",
    "careful", "playful", "lonely", "cheerful", "busy", "bright", "fluffy", "soft", "shiny", "old", "new",
    "fancy", "muddy", "colorful", "strong", "smart", "wise", "bold",
)
COLORS = ("red", "blue", "green", "yellow", "pink", "purple", "orange", "white", "black", "brown", "gold", "silver")
PLACES = (
    "park", "garden", "forest", "beach", "farm", "school", "library", "river", "lake", "hill", "meadow",
    "zoo", "playground", "market", "kitchen", "backyard", "cave", "castle", "bakery", "pond", "field",
    "mountain", "island", "village", "town square", "treehouse", "barn", "museum", "train station", "harbor",
)
OBJECTS = (
    "ball", "kite", "toy car", "teddy bear", "doll", "box", "hat", "book", "drum", "boat", "balloon",
    "shell", "rock", "stick", "flower", "leaf", "cup", "spoon", "blanket", "pillow", "crayon", "paintbrush",
    "key", "bell", "ring", "necklace", "map", "lamp", "basket", "bucket", "shovel", "bike", "scooter",
    "robot", "puzzle", "jar", "button", "ribbon", "feather", "marble", "whistle", "umbrella", "sock",
    "shoe", "scarf", "mitten", "clock", "mirror", "wagon", "toy train",
)
FOODS = (
    "apple", "banana", "cookie", "cake", "pie", "sandwich", "carrot", "orange", "pear", "muffin", "bun",
    "soup", "candy", "pizza", "grapes", "cheese", "bread", "honey", "jam", "ice cream", "peach", "plum",
    "berries", "pancake", "popcorn",
)
WEATHER = (
    "sunny", "rainy", "windy", "snowy", "cloudy", "warm", "cold", "foggy", "stormy", "bright",
)
TIMES = (
    "One day", "Once upon a time", "One morning", "One sunny afternoon", "Long ago", "One evening",
    "On a cold winter day", "One summer day", "Early one morning", "One rainy day", "Last spring",
    "On a windy autumn day",
)
FEELINGS_GOOD = ("happy", "glad", "proud", "excited", "calm", "thankful", "cheerful", "joyful")
FEELINGS_BAD = ("sad", "scared", "worried", "angry", "upset", "lonely", "confused", "tired")
ACTIVITIES = (
    "play tag", "build a sandcastle", "fly a kite", "paint a picture", "sing a song", "read a story",
    "plant seeds", "bake a cake", "ride bikes", "jump in puddles", "play hide and seek", "draw with chalk",
    "look for bugs", "pick flowers", "splash in the water", "make a fort", "climb a tree", "dance",
    "play with blocks", "feed the ducks", "have a picnic", "count the stars", "collect shells", "race",
)
SOUNDS = ("a loud bang", "a soft squeak", "a funny noise", "a little cry", "a happy song", "a strange buzz")
HELPERS = ("mom", "dad", "grandma", "grandpa", "teacher", "big sister", "big brother", "aunt", "uncle")
SAY_VERBS = ("said", "asked", "shouted", "whispered", "cried", "laughed", "replied", "called")
MORALS = (
    "It is good to share with friends.",
    "Being kind makes everyone happy.",
    "It is okay to ask for help.",
    "Being brave is not the same as not being scared.",
    "Friends help each other.",
    "Saying sorry can fix a lot of things.",
    "Listening is a way to be kind.",
    "Working together makes hard things easy.",
    "Telling the truth is always best.",
    "Trying again is how you learn.",
    "Everyone is good at something.",
    "Being careful keeps you safe.",
)
ENDINGS = (
    "From that day on, {a} and {b} were best friends.",
    "That night, {a} went to sleep with a big smile.",
    "{a} never forgot that day.",
    "And they all lived happily ever after.",
    "{a} hugged {b} and said thank you.",
    "The end of the day was the best part of all.",
    "{a} and {b} laughed and played until the sun went down.",
    "Now {a} visits the {place} every week.",
)
