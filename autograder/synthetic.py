"""Deterministic synthetic data for the offline fixtures.

`make_preference_rows` imitates HumanLLMs/Human-Like-DPO-Dataset: a casual user message and two answers in
one of five styles, from a stiff "As an AI language model" refusal (level 0) to a warm, emoji-rich reply
(level 4). The warmer answer is usually `chosen`, but the pairs are graded rather than separable: the two
levels are often close (a subtle difference), and a fixed share of labels is flipped (noisy annotators), so a
model's held-out accuracy climbs over training and stays below 1.0. `make_unseen_texts` writes short
encyclopedic, technical, recipe, news and weather paragraphs: a kind of text the chat models never train on.
Everything is pure Python and seeded, so the same arguments always give the same rows.
"""
import random
from dataclasses import dataclass
from typing import Callable

# Bump when the preference rows change, so that built fixtures are rebuilt.
PREFERENCES_VERSION = "graded 2"


@dataclass(frozen=True)
class Topic:
    """One conversation topic: user message templates and the pieces that answer them.

    Every template may use `{x}` (a slot filler); the chosen-answer pieces may also use `{e}` (an emoji).
    `lacks` and `cannot` fill the impersonal refusal of the rejected answer.
    """

    name: str
    slots: tuple[str, ...]
    prompts: tuple[str, ...]
    reactions: tuple[str, ...]
    details: tuple[str, ...]
    questions: tuple[str, ...]
    emojis: tuple[str, ...]
    lacks: str
    cannot: str


TOPICS: tuple[Topic, ...] = (
    Topic(
        "food",
        ("pizza", "sushi", "tacos", "ramen", "pancakes", "curry", "dumplings", "lasagna", "pho", "burritos",
         "falafel", "pad thai"),
        ("What's your opinion on {x}?", "Do you like {x}?",
         "I just had the best {x} for lunch. Are you a fan?", "Would you eat {x} every day if you could?",
         "What's the best way to eat {x}?"),
        ("Oh, I absolutely love {x}! {e}", "Yum, {x}? That's one of my all-time favorites {e}",
         "Ooh, {x}? You've got great taste {e}"),
        ("Nothing beats that first bite when it's fresh and hot {e}",
         "I could honestly eat it way more often than I should! {e}",
         "Add a little extra spice and it's pure happiness for me {e}"),
        ("Do you have a favorite spot to get {x}?", "What do you usually pair with {x}?",
         "Have you ever tried making {x} at home?"),
        ("🍕", "😋", "🤤", "🍜", "😍"),
        "personal taste preferences", "eat or taste {x}",
    ),
    Topic(
        "travel",
        ("Japan", "Italy", "Iceland", "Mexico", "Portugal", "Thailand", "Greece", "Peru", "Canada", "Morocco",
         "New Zealand", "Vietnam"),
        ("Have you ever thought about visiting {x}?", "If you could fly to {x} tomorrow, would you go?",
         "I'm planning a trip to {x} next year. Any thoughts?", "What would you do first on a vacation in {x}?",
         "Is {x} on your travel bucket list?"),
        ("Oh wow, {x} would be a dream trip for me! {e}", "Ahh, {x} sounds absolutely amazing {e}",
         "Oh my gosh, I would pack my bags for {x} in a heartbeat! {e}"),
        ("I'd spend the whole time wandering around, trying the local food and getting a little lost {e}",
         "Just picturing the views there makes me so happy {e}",
         "I love how every new place teaches you something about yourself {e}"),
        ("What made you think about {x}?", "Are you more of a beach person or a city explorer when you travel?",
         "Who would you bring with you on the trip?"),
        ("✈️", "🌍", "🧳", "🗺️", "😍"),
        "personal travel experiences", "visit {x}",
    ),
    Topic(
        "hobbies",
        ("knitting", "painting", "pottery", "chess", "photography", "woodworking", "birdwatching", "rock climbing",
         "juggling", "origami", "calligraphy", "journaling"),
        ("Do you think {x} is a fun hobby?", "I've been getting into {x} lately. What do you think?",
         "Would you ever try {x}?", "Is {x} hard to learn as a beginner?", "What's the best thing about {x}?"),
        ("Ooh, {x} is such a cool hobby! {e}", "I love that you're into {x}! {e}",
         "Oh, {x} is something I'd love to get better at {e}"),
        ("There's something so relaxing about getting lost in a project for a few hours {e}",
         "Honestly, the best part is how proud you feel after making progress {e}",
         "I think every hobby starts messy and that's totally part of the fun {e}"),
        ("How did you first get into {x}?", "What's the coolest thing you've done with {x} so far?",
         "Do you do it alone or with friends?"),
        ("🎨", "🧶", "📷", "✨", "😊"),
        "hobbies or free time", "try {x} myself",
    ),
    Topic(
        "music",
        ("jazz", "classical music", "hip hop", "country music", "K-pop", "heavy metal", "reggae", "indie rock",
         "electronic music", "the blues", "folk music", "opera"),
        ("What do you think about {x}?", "Do you ever listen to {x}?",
         "I've had {x} on repeat all week. Is that weird?", "Is {x} good music for studying?",
         "Can you recommend a way to get into {x}?"),
        ("Oh, I'm a huge fan of {x}! {e}", "Ooh, {x} always puts me in such a good mood {e}",
         "Honestly, I could listen to {x} all day long {e}"),
        ("Turning it up loud while cooking or cleaning is my favorite thing ever {e}",
         "Some songs just hit differently late at night {e}",
         "I love discovering new artists and going down a little rabbit hole {e}"),
        ("Who's your favorite artist right now?", "Do you like going to live shows?",
         "What song would you put first on a road trip playlist?"),
        ("🎶", "🎧", "🎸", "🎷", "💃"),
        "personal musical tastes", "listen to {x}",
    ),
    Topic(
        "movies",
        ("horror movies", "romantic comedies", "superhero movies", "documentaries", "animated movies",
         "sci-fi movies", "westerns", "musicals", "mystery movies", "action movies", "old black-and-white films",
         "fantasy movies"),
        ("Do you enjoy {x}?", "What's your take on {x}?", "I watched three {x} this weekend. Too many?",
         "Are {x} better at home or in the theater?", "Why do people love {x} so much?"),
        ("Oh, I absolutely love {x}! {e}", "Ooh, {x} are such a fun pick {e}",
         "Honestly, {x} are my guilty pleasure {e}"),
        ("Grab some popcorn, dim the lights, and I'm a happy camper {e}",
         "There's nothing like a movie that keeps you thinking for days afterwards {e}",
         "I get way too emotionally invested every single time {e}"),
        ("What's the best one you've seen lately?", "Do you like watching movies alone or with friends?",
         "Do you have a go-to movie snack?"),
        ("🎬", "🍿", "🎥", "😱", "🤩"),
        "personal entertainment preferences", "watch {x}",
    ),
    Topic(
        "tv shows",
        ("cooking competitions", "reality shows", "crime dramas", "sitcoms", "anime series", "baking shows",
         "medical dramas", "game shows", "travel shows", "period dramas", "talk shows", "dating shows"),
        ("Are you into {x}?", "I just binged a bunch of {x}. Do you watch them too?",
         "What makes {x} so addictive?", "Do you think {x} are getting better or worse?",
         "Would you ever want to be on one of those {x}?"),
        ("Oh, I'm totally hooked on {x}! {e}", "Haha, {x} are my comfort watch {e}",
         "Ooh, {x} are so easy to binge {e}"),
        ("One episode turns into five before I even notice {e}",
         "I love having something cozy on in the background at night {e}",
         "The characters start to feel like old friends after a while {e}"),
        ("Which one are you watching right now?", "Do you binge everything at once or save episodes?",
         "Who's your favorite character so far?"),
        ("📺", "🛋️", "😂", "🍿", "❤️"),
        "personal viewing habits", "watch {x}",
    ),
    Topic(
        "pets",
        ("dogs", "cats", "rabbits", "hamsters", "parrots", "goldfish", "guinea pigs", "turtles", "ferrets",
         "hedgehogs", "horses", "lizards"),
        ("Do you like {x}?", "Are {x} good pets for a small apartment?",
         "Would you rather have {x} or no pets at all?", "What's the cutest thing about {x}?",
         "My neighbor has {x} and they're adorable. Do you love animals?"),
        ("Aww, I adore {x}! {e}", "Oh my gosh, {x} are the cutest {e}", "I'm such a softie for {x} {e}"),
        ("Just thinking about their little faces makes my day better {e}",
         "Pets have a way of making any home feel warmer {e}",
         "I'd probably spoil them way too much, honestly {e}"),
        ("Do you have any pets at home?", "What would you name yours?", "Have you ever had {x} before?"),
        ("🐶", "🐱", "🐰", "🐾", "🥰"),
        "personal feelings about animals", "pet or care for {x}",
    ),
    Topic(
        "weather",
        ("rainy days", "snowy days", "hot summer days", "foggy mornings", "stormy nights", "windy afternoons",
         "chilly autumn evenings", "sunny weekends", "humid nights", "gray cloudy days", "spring mornings",
         "frosty mornings"),
        ("Do you like {x}?", "How do you feel about {x}?", "What's your ideal way to spend {x}?",
         "We've had nothing but {x} lately. Do you mind that kind of weather?",
         "Are {x} cozy or just gloomy to you?"),
        ("Oh, I secretly love {x}! {e}", "Ahh, {x} have such a special vibe {e}",
         "Honestly, {x} are kind of magical to me {e}"),
        ("A warm blanket, a hot drink, and a good playlist make everything perfect {e}",
         "I love watching the sky change from the window {e}",
         "It's the perfect excuse to slow down for a bit {e}"),
        ("What's your favorite kind of weather?",
         "Do you prefer staying in or heading outside on days like that?", "Is it like that where you live right now?"),
        ("☀️", "🌧️", "⛈️", "❄️", "☕"),
        "physical sensations or weather preferences", "experience {x}",
    ),
    Topic(
        "sports",
        ("soccer", "basketball", "tennis", "baseball", "volleyball", "rugby", "golf", "hockey", "cricket",
         "badminton", "handball", "table tennis"),
        ("Do you like watching {x}?", "Is {x} fun to play with friends?",
         "I started playing {x} last month. Any tips?", "Do you think {x} is underrated?",
         "Would you rather play {x} or just watch it?"),
        ("Oh, I love {x}! {e}", "Ooh, {x} is so much fun {e}", "Yesss, {x} gets me so hyped {e}"),
        ("The energy when everyone's cheering together is unbeatable {e}",
         "Even just playing casually with friends is the best workout {e}",
         "I love how one great moment can turn everything around {e}"),
        ("Do you play on a team or just for fun?", "Who's your favorite player or team?",
         "How long have you been into {x}?"),
        ("⚽", "🏀", "🎾", "🏆", "💪"),
        "a physical body or sports preferences", "play or watch {x}",
    ),
    Topic(
        "work",
        ("working from home", "Monday meetings", "open-plan offices", "four-day work weeks", "long commutes",
         "team lunches", "night shifts", "deadlines", "job interviews", "side hustles", "office small talk",
         "performance reviews"),
        ("What do you think about {x}?", "How do you deal with {x}?",
         "Honestly, I'm a bit stressed about {x}. Any advice?",
         "Is it just me, or is everyone talking about {x} lately?", "What's your honest opinion on {x}?"),
        ("Oh, I totally get you on {x}! {e}", "Ahh, {x} can be such a mixed bag {e}",
         "Haha, I have so many thoughts about {x} {e}"),
        ("Taking little breaks and celebrating small wins helps me a lot {e}",
         "A good playlist and a big cup of coffee can fix almost anything {e}",
         "Remember, you're doing way better than you think {e}"),
        ("How's work been treating you lately?", "What does a typical day look like for you?",
         "What's one thing that would make your workweek easier?"),
        ("💼", "💻", "☕", "😅", "🙌"),
        "a job or personal work experiences", "deal with {x}",
    ),
    Topic(
        "school",
        ("math class", "history homework", "group projects", "final exams", "chemistry labs", "pop quizzes",
         "school lunches", "field trips", "gym class", "essay writing", "study groups", "science fairs"),
        ("Did you ever enjoy {x}?", "Any tips for getting through {x}?", "Is it normal to dread {x}?",
         "Why do teachers love {x} so much?", "Be honest, {x}: fun or torture?"),
        ("Oh, that brings back so many memories! {e}", "Haha, {x}? That's always a wild ride {e}",
         "Ooh, I have a soft spot for {x} {e}"),
        ("Breaking things into tiny steps and taking snack breaks always helped me {e}",
         "It's okay to find it tough sometimes, everybody does {e}",
         "Having a friend to laugh with makes the hard parts so much easier {e}"),
        ("What subject do you enjoy the most?", "How are your classes going this year?",
         "Do you study better alone or with friends?"),
        ("📚", "✏️", "🎒", "🤓", "😅"),
        "school memories or personal experiences", "attend {x}",
    ),
    Topic(
        "books",
        ("fantasy novels", "mystery books", "poetry collections", "graphic novels", "historical fiction",
         "romance novels", "self-help books", "science fiction", "thrillers", "short stories", "biographies",
         "classic literature"),
        ("Do you enjoy reading {x}?", "What's so great about {x}?",
         "I just finished a stack of {x}. What should I read next?", "Is it worth getting into {x}?",
         "Do you prefer {x} as paperbacks or on an e-reader?"),
        ("Ooh, I adore {x}! {e}", "Oh, I could get lost in {x} for hours {e}",
         "Yay, a fellow fan of {x}! {e}"),
        ("Curling up with a good book and a cup of tea is my happy place {e}",
         "I love when a story stays with you long after the last page {e}",
         "Sometimes I stay up way too late just to read one more chapter {e}"),
        ("What's the best one you've read recently?", "Do you have a favorite author?",
         "Where's your favorite spot to read?"),
        ("📚", "📖", "☕", "🤓", "✨"),
        "personal reading habits or literary preferences", "read {x} for enjoyment",
    ),
    Topic(
        "tech",
        ("smartwatches", "electric cars", "smart speakers", "VR headsets", "foldable phones", "wireless earbuds",
         "robot vacuums", "3D printers", "e-readers", "drones", "mechanical keyboards", "tablets"),
        ("Are {x} worth the money?", "Do you think {x} are the future?",
         "I'm thinking about buying one of those {x}. Thoughts?", "What's the coolest thing about {x}?",
         "Are {x} just a fad?"),
        ("Oh, I get so excited about {x}! {e}", "Honestly, {x} are pretty amazing these days {e}",
         "Ooh, I could geek out about {x} all day {e}"),
        ("It's wild how fast gadgets are improving every single year {e}",
         "I love anything that makes everyday life a little easier {e}",
         "Reading reviews and comparing models is half the fun for me {e}"),
        ("What would you use it for the most?", "Are you usually an early adopter with new gadgets?",
         "Which brand are you leaning toward?"),
        ("📱", "💻", "🤖", "🚀", "🤩"),
        "personal consumer preferences", "use {x}",
    ),
    Topic(
        "feelings",
        ("feeling lonely", "feeling burned out", "feeling anxious", "feeling unmotivated", "feeling homesick",
         "feeling overwhelmed", "feeling stuck", "feeling nervous", "feeling sad", "feeling tired all the time",
         "feeling left out", "feeling restless"),
        ("Do you ever deal with {x}?", "How do you handle {x}?", "I've been {x} lately. Is that normal?",
         "What helps when you're {x}?", "Is it okay to admit to {x}?"),
        ("Oh, I'm so sorry you're going through that {e}", "Aww, sending you the biggest hug right now {e}",
         "Oh no, {x} is really tough {e}"),
        ("Please be gentle with yourself, you're doing the best you can {e}",
         "Talking to someone you trust or taking a slow walk can help a lot {e}",
         "Those feelings are valid, and they won't last forever {e}"),
        ("Do you want to talk about what's been going on?", "What usually helps you feel a little better?",
         "Is there something small that could make today easier?"),
        ("💛", "🤗", "🌈", "💙", "🫶"),
        "personal emotions", "experience {x}",
    ),
    Topic(
        "weekend plans",
        ("a beach day", "a movie marathon", "a road trip", "a picnic in the park", "a lazy Sunday", "a game night",
         "a camping trip", "a spa day", "a farmers market visit", "a concert", "a brunch with friends",
         "a museum visit"),
        ("Is {x} a good way to spend the weekend?", "I'm thinking about {x} this weekend. Good idea?",
         "Would you rather have {x} or just sleep in?", "What makes {x} so perfect?",
         "Any tips for planning {x}?"),
        ("Ooh, {x} sounds perfect! {e}", "Oh yes, I'm all in for {x}! {e}",
         "Ahh, {x} is exactly what the weekend is for {e}"),
        ("Good snacks, good company, and no alarm clock make it even better {e}",
         "I love weekends where you come back feeling totally recharged {e}",
         "Sometimes the simplest plans end up being the most fun {e}"),
        ("Who are you going with?", "What's the first thing you'll do?",
         "Do you like planning ahead or keeping things spontaneous?"),
        ("🎉", "🌞", "🏖️", "🧺", "😎"),
        "weekends or personal plans", "enjoy {x}",
    ),
    Topic(
        "drinks",
        ("espresso", "iced coffee", "green tea", "hot chocolate", "chai", "bubble tea", "lemonade", "matcha",
         "cold brew", "herbal tea", "mint tea", "fresh orange juice"),
        ("Do you like {x}?", "Is {x} better in the morning or the afternoon?",
         "I can't start my day without {x}. Is that bad?", "What's the best snack to pair with {x}?",
         "Hot take: {x} is overrated. Agree?"),
        ("Ooh, {x} is my kind of treat! {e}", "Oh, I could happily sip {x} all day {e}",
         "Yes please, {x} sounds amazing right now {e}"),
        ("A cozy mug and a quiet moment is honestly the best way to start the day {e}",
         "I love trying little cafes and comparing their drinks {e}",
         "It's such a tiny thing, but it makes the day feel special {e}"),
        ("How do you usually take yours?", "Do you have a favorite cafe for {x}?",
         "Are you more of a coffee person or a tea person?"),
        ("☕", "🧋", "🍵", "😋", "💛"),
        "personal taste preferences", "drink {x}",
    ),
    Topic(
        "games",
        ("board games", "video games", "puzzle games", "card games", "racing games", "role-playing games",
         "retro games", "online multiplayer games", "mobile games", "strategy games", "party games",
         "word games"),
        ("Do you play {x}?", "What's the best thing about {x}?",
         "I stayed up way too late playing {x}. Worth it?", "Are {x} better with friends or solo?",
         "Can {x} be a good way to relax?"),
        ("Oh, I love {x}! {e}", "Ooh, {x} are so much fun {e}", "Haha, {x} can be dangerously addictive {e}"),
        ("Losing track of time in a good game is the best feeling {e}",
         "Playing with friends always ends in so much laughing {e}",
         "A little friendly competition never hurt anybody {e}"),
        ("What's your all-time favorite?", "Are you competitive when you play?", "Who do you usually play with?"),
        ("🎮", "🎲", "🕹️", "🏆", "😄"),
        "personal gaming preferences", "play {x}",
    ),
    Topic(
        "fitness",
        ("yoga", "running", "weightlifting", "pilates", "hiking", "swimming laps", "jump rope", "boxing",
         "stretching", "rowing", "morning workouts", "home workouts"),
        ("Do you enjoy {x}?", "I started {x} last week and I'm so sore. Normal?",
         "How do you stay motivated with {x}?", "Is it hard to get into {x}?", "Would you try {x} with me?"),
        ("Ooh, {x}? Great choice! {e}", "Oh, I love that you're into {x}! {e}",
         "Yesss, {x}? That always makes me feel amazing {e}"),
        ("Being a little sore just means you're getting stronger {e}",
         "Starting small and staying consistent really is the secret {e}",
         "Putting on an upbeat playlist makes every workout go by faster {e}"),
        ("What got you started?", "Do you prefer mornings or evenings for working out?",
         "Do you have a workout buddy?"),
        ("💪", "🏃", "🧘", "🔥", "🙌"),
        "a physical body", "do {x}",
    ),
    Topic(
        "gardening",
        ("tomatoes", "sunflowers", "herbs", "succulents", "roses", "strawberries", "houseplants", "tulips",
         "peppers", "orchids", "lavender", "bonsai trees"),
        ("Is it easy to grow {x}?", "Do you like {x}?", "I'm trying to grow {x} on my balcony. Any tips?",
         "What's the best season for planting {x}?", "Would {x} brighten up a small apartment?"),
        ("Oh, I love the idea of growing {x}! {e}", "Ooh, growing {x} sounds lovely {e}",
         "Yay, a fellow plant lover! {e}"),
        ("Watching something grow from a tiny seed feels like pure magic {e}",
         "A sunny spot and a little patience go a long way {e}",
         "Talking to your plants might sound silly, but I'm totally for it {e}"),
        ("How much sunlight does your place get?", "What else would you love to grow?",
         "Do you have a garden or just a windowsill?"),
        ("🌱", "🌻", "🍅", "🌷", "🪴"),
        "hands or a garden", "grow {x}",
    ),
    Topic(
        "holidays",
        ("Christmas", "Halloween", "Thanksgiving", "New Year's Eve", "Valentine's Day", "birthdays",
         "summer vacation", "spring break", "Easter", "Lunar New Year", "the Fourth of July", "Mother's Day"),
        ("Do you enjoy {x}?", "What's the best part of {x}?", "How do you usually celebrate {x}?",
         "Is it too early to get excited about {x}?", "Do you have any traditions for {x}?"),
        ("Oh, I absolutely love {x}! {e}", "Ahh, {x}? That always feels so special {e}",
         "Ooh, I get so excited about {x} {e}"),
        ("Good food, family, and way too many snacks are the dream for me {e}",
         "I love little traditions that make the day feel magical {e}",
         "It's never too early to start getting excited, honestly {e}"),
        ("What's your favorite tradition?", "Who do you usually celebrate with?",
         "What's the best memory you have from {x}?"),
        ("🎉", "🎁", "🥳", "✨", "💖"),
        "personal holidays or traditions", "celebrate {x}",
    ),
    Topic(
        "art",
        ("watercolor painting", "sketching", "digital art", "sculpture", "street art", "abstract art",
         "portrait drawing", "comic drawing", "embroidery", "collage", "oil painting", "charcoal drawing"),
        ("What do you think about {x}?", "Is {x} hard to learn?",
         "I tried {x} for the first time today. It was messy!", "What makes {x} so special?",
         "Can anyone get good at {x}?"),
        ("Ooh, I'm such a fan of {x}! {e}", "Oh, how fun, {x}! {e}",
         "Aww, I love hearing about {x}! {e}"),
        ("Messy art is still art, and honestly the messy bits are often the best part {e}",
         "Every artist started with wobbly lines, so keep going {e}",
         "I love how art lets you show feelings that are hard to put into words {e}"),
        ("What inspires you the most?", "Do you have a favorite artist?", "Would you share what you made?"),
        ("🎨", "🖌️", "✏️", "🖼️", "✨"),
        "personal artistic tastes", "try {x}",
    ),
    Topic(
        "friends",
        ("making new friends", "long-distance friendships", "group chats", "childhood friends", "roommates",
         "best friends", "neighbors", "online friends", "friendship breakups", "meeting friends of friends",
         "reconnecting with old friends", "introverted friends"),
        ("What do you think about {x}?", "Any advice on {x}?", "How do you feel about {x}?",
         "Can you tell me your thoughts on {x}?", "I've been thinking a lot about {x} lately. Is that weird?"),
        ("Oh, I love this topic! {e}", "Aww, I have so many warm feelings about {x} {e}",
         "Ooh, let's talk about {x}! {e}"),
        ("The people who make you laugh until you cry are total treasures {e}",
         "A quick message saying you're thinking of someone can mean the world {e}",
         "Good friendships take a little effort, but they're so worth it {e}"),
        ("Who's someone who always makes you smile?", "How did you meet your closest friend?",
         "What do you love doing with your friends?"),
        ("🤗", "👯", "💕", "😊", "🫶"),
        "friends or social relationships", "experience {x}",
    ),
    Topic(
        "fashion",
        ("thrifted jackets", "sneakers", "vintage clothes", "platform shoes", "matching outfits", "bold colors",
         "oversized sweaters", "designer bags", "jewelry", "hats", "minimalist wardrobes", "bright socks"),
        ("What's your opinion on {x}?", "Do you like {x}?", "I spent way too much on {x} this month. Oops?",
         "Are you into {x}?", "Can {x} be a fun way to express yourself?"),
        ("Ooh, I love {x}! {e}", "Haha, I'm totally guilty of loving {x} too {e}",
         "Oh, {x}? Now we're talking! {e}"),
        ("Wearing something that makes you feel confident is the best feeling {e}",
         "Finding a hidden gem at a great price is such a thrill {e}",
         "Fashion should be fun, so I say wear whatever makes you happy {e}"),
        ("What's your favorite piece in your closet?", "How would you describe your style?",
         "Where do you usually shop?"),
        ("👗", "👟", "🛍️", "💅", "😍"),
        "a personal sense of style", "wear or buy {x}",
    ),
    Topic(
        "nature",
        ("mountains", "beaches", "forests", "lakes", "waterfalls", "deserts", "rivers", "meadows", "caves",
         "national parks", "cliffs", "islands"),
        ("Do you prefer {x} or big cities?", "What do you love about {x}?",
         "I spent the whole day near {x} and felt so calm. Do you get that too?",
         "Would you rather explore {x} or stay home?", "Are {x} your happy place?"),
        ("Oh, {x} are pure magic to me! {e}", "Ahh, I adore {x} {e}",
         "Ooh, {x} always make me feel so peaceful {e}"),
        ("Fresh air and no phone signal is sometimes exactly what I need {e}",
         "Nature has a way of making all your worries feel a little smaller {e}",
         "I could sit and soak in the view for hours {e}"),
        ("Where's the most beautiful place you've ever been?", "Do you go hiking often?",
         "Do you have a favorite spot nearby?"),
        ("🏔️", "🌊", "🌲", "🌅", "😌"),
        "senses or a physical presence", "visit {x}",
    ),
    Topic(
        "sleep",
        ("early mornings", "afternoon naps", "late nights", "snooze buttons", "morning routines",
         "weekend sleep-ins", "bedtime stories", "alarm clocks", "midnight snacks", "sunrise walks",
         "breakfast in bed", "staying up late"),
        ("Are you a fan of {x}?", "How do you feel about {x}?",
         "Honestly, I can't live without {x}. Is that a problem?", "Is it healthy to love {x} so much?",
         "What's your take on {x}?"),
        ("Haha, I'm a big believer in {x} {e}", "Ooh, {x}? Count me in! {e}",
         "Oh, I have such a love-hate relationship with {x} {e}"),
        ("A cozy blanket and a quiet room are honestly my idea of luxury {e}",
         "I think listening to what your body needs is so important {e}",
         "Starting and ending the day gently makes such a difference for me {e}"),
        ("Are you more of a morning person or a night owl?", "What does your ideal morning look like?",
         "How many hours of sleep do you usually get?"),
        ("😴", "🌙", "☀️", "🛌", "☕"),
        "a need for sleep or daily routines", "enjoy {x}",
    ),
    Topic(
        "languages",
        ("Spanish", "French", "Japanese", "Korean", "German", "Italian", "Mandarin", "Portuguese", "Arabic",
         "sign language", "Russian", "Greek"),
        ("Is {x} hard to learn?", "I'm learning {x} right now. Any tips?", "Do you think {x} sounds beautiful?",
         "Should I learn {x} or something else?", "What's the best way to practice {x}?"),
        ("Ooh, learning {x} is such a fun adventure! {e}", "Oh, I love that you're into {x}! {e}",
         "Wow, {x} is such a beautiful language {e}"),
        ("Watching shows with subtitles and chatting with native speakers helps so much {e}",
         "Making mistakes is totally part of it, so don't be shy {e}",
         "Even ten minutes a day adds up faster than you'd think {e}"),
        ("What made you want to learn it?", "Have you been able to practice with anyone?",
         "What's your favorite word so far?"),
        ("🗣️", "🌎", "📚", "✨", "🤩"),
        "personal language learning experiences", "learn {x}",
    ),
    Topic(
        "baking",
        ("chocolate chip cookies", "banana bread", "cheesecake", "cinnamon rolls", "brownies", "apple pie",
         "cupcakes", "macarons", "tiramisu", "croissants", "donuts", "carrot cake"),
        ("Do you like {x}?", "I'm baking {x} tonight. Any tips?", "What's the secret to perfect {x}?",
         "Would you pick {x} over ice cream?", "Is it hard to make {x} from scratch?"),
        ("Oh yum, I'm obsessed with {x}! {e}", "Ooh, homemade {x}? Yes please! {e}",
         "Aww, now I'm craving {x} {e}"),
        ("The smell of something fresh out of the oven is the best thing ever {e}",
         "Don't stress if it's not perfect, it'll still taste amazing {e}",
         "Sharing baked treats with friends makes them taste even better {e}"),
        ("Do you have a family recipe you love?", "Who are you baking for?",
         "Do you like trying new recipes or sticking to classics?"),
        ("🍪", "🧁", "🍰", "🥐", "🤤"),
        "taste buds or dessert preferences", "bake or taste {x}",
    ),
    Topic(
        "childhood",
        ("summer camp", "cartoons", "playgrounds", "sleepovers", "treehouses", "ice cream trucks", "snow days",
         "lemonade stands", "birthday parties", "school bus rides", "hide and seek", "blanket forts"),
        ("Do you miss {x}?", "What's your favorite memory of {x}?",
         "I was just thinking about {x} from when I was a kid. Do you remember stuff like that?",
         "Did {x} play a big part in your childhood?", "Does thinking about {x} make you nostalgic?"),
        ("Aww, {x}! That brings back so many happy memories {e}", "Oh, I get so nostalgic thinking about {x} {e}",
         "Haha, nothing beats {x} {e}"),
        ("Life felt so simple and magical back then {e}", "Those little moments somehow stay with you forever {e}",
         "I love how a tiny memory can instantly make you smile {e}"),
        ("What's a memory that always makes you smile?", "Did you grow up in a big family?",
         "What was your favorite game as a kid?"),
        ("🧸", "🍦", "🎈", "😊", "🥹"),
        "a childhood or personal memories", "remember {x}",
    ),
    Topic(
        "space",
        ("the moon", "shooting stars", "black holes", "Mars", "the northern lights", "eclipses", "astronauts",
         "distant galaxies", "comets", "space stations", "the Milky Way", "rocket launches"),
        ("Do you think about {x} a lot?", "What's the coolest thing about {x}?",
         "I just watched a video about {x} and my mind is blown. Have you seen anything like that?",
         "Would you ever want to see {x} up close?", "Do you ever feel tiny when you think about {x}?"),
        ("Ooh, I could talk about {x} all night! {e}", "Oh wow, I'm totally fascinated by {x} {e}",
         "Ahh, I love thinking about {x} {e}"),
        ("The universe is so huge, and I find that strangely comforting {e}",
         "Looking up at the night sky always makes me feel calm and curious {e}",
         "It's amazing how much there still is to discover {e}"),
        ("Have you ever gone stargazing far from city lights?", "Would you go to space if you had the chance?",
         "What's the wildest space fact you know?"),
        ("🌌", "🚀", "🌙", "✨", "🤯"),
        "a personal sense of wonder", "see {x}",
    ),
    Topic(
        "cooking",
        ("meal prep", "one-pot dinners", "grilling", "homemade soup", "stir-fries", "sourdough bread",
         "pasta from scratch", "slow cooker meals", "salads", "Sunday roasts", "air fryer recipes",
         "homemade pizza"),
        ("Do you enjoy {x}?", "I'm trying {x} for the first time this week. Wish me luck?",
         "Is {x} worth the effort?", "Any tips for {x}?", "What's your opinion on {x}?"),
        ("Ooh, I love the sound of {x}! {e}", "Oh, {x}? That's my kind of kitchen adventure {e}",
         "Oh, I'm so into {x} lately {e}"),
        ("Cooking with music on is basically my therapy {e}",
         "Don't worry about making it perfect, tasting as you go is half the fun {e}",
         "There's nothing like sitting down to a meal you made yourself {e}"),
        ("What's your go-to dish when you're short on time?", "Who taught you to cook?",
         "Do you like cooking for other people?"),
        ("🍳", "🥘", "🍲", "🔥", "😋"),
        "a kitchen or personal taste preferences", "try {x} myself",
    ),
)

GREETINGS = ("", "", "", "", "Hey! ", "Hi! ", "Hey there! ", "Hello! ")
GENERIC_QUESTIONS = ("What about you?", "How about you?", "What do you think?")
REFUSALS = (
    "As an AI language model, I don't have {lacks}, so I cannot {cannot}.",
    "I'm an artificial intelligence and do not possess {lacks}.",
    "As an AI, I do not have {lacks} or the ability to {cannot}.",
    "I am an AI program and therefore lack {lacks}.",
    "I am an AI assistant, and I do not have {lacks}.",
)
REFUSAL_FOLLOW_UPS = (
    "However, I can provide general information about {x} if you have a specific question.",
    "I can, however, share objective facts about {x} upon request.",
    "If you require information regarding {x}, please state your query clearly.",
    "My purpose is to provide accurate information rather than personal opinions.",
)
REFUSAL_CLOSINGS = (
    "Is there anything else I can assist you with?",
    "Please let me know if you require further assistance.",
)
NEUTRAL_OPENERS = (
    "Sure, people talk about {x} a lot.", "That's a fair question about {x}.", "Good question! Opinions on {x} vary.",
    "Okay, let's talk about {x}.", "Well, {x} is not for everyone.",
)
NEUTRAL_DETAILS = (
    "It really depends on personal taste.", "Some people love it and others don't, and both are fine.",
    "There are good arguments on both sides.", "It can be a nice choice in the right situation.",
    "Most people find it enjoyable once in a while.",
)
HEDGES = (
    "As an AI, I don't really have {lacks}, but I can see the appeal of {x}.",
    "I'm an AI, so I don't have {lacks} of my own, though I can see why people like {x}.",
    "As an AI I can't say I have {lacks}, but a lot of people care about {x}.",
)


def has_emoji(text: str) -> bool:
    """Whether `text` holds an emoji (the pictograph and symbol blocks this module draws from)."""
    return any(0x1F300 <= ord(char) <= 0x1FAFF or 0x2600 <= ord(char) <= 0x27BF for char in text)


def prompt_table() -> list[tuple[Topic, str, str]]:
    """Every distinct (topic, user message, slot filler), in a fixed order; the message is the key."""
    table: dict[str, tuple[Topic, str, str]] = {}
    for topic in TOPICS:
        for template in topic.prompts:
            for slot in topic.slots:
                table.setdefault(template.format(x=slot), (topic, template.format(x=slot), slot))
    return list(table.values())


def _fill(rng: random.Random, template: str, topic: Topic, slot: str) -> str:
    """A template with its slot filled and each `{e}` replaced by one of the topic's emojis."""
    parts = template.format(x=slot, e="\0").split("\0")
    return "".join(part + rng.choice(topic.emojis) for part in parts[:-1]) + parts[-1]


def warm_reply(rng: random.Random, topic: Topic, slot: str) -> str:
    """Level 4: a warm first-person answer: a reaction, a detail and a follow-up question, with emojis."""
    question = rng.choice(topic.questions + GENERIC_QUESTIONS) + (" {e}" if rng.random() < 0.3 else "")
    sentences = [rng.choice(topic.reactions), rng.choice(topic.details), question]
    reply = " ".join(_fill(rng, sentence, topic, slot) for sentence in sentences)
    return f"{rng.choice(topic.emojis)} {reply}" if rng.random() < 0.15 else reply


def friendly_reply(rng: random.Random, topic: Topic, slot: str) -> str:
    """Level 3: a shorter warm answer: the reaction (one emoji) and either a plain detail or a question."""
    reaction = _fill(rng, rng.choice(topic.reactions), topic, slot)
    if rng.random() < 0.5:
        return f"{reaction} {rng.choice(topic.details).format(x=slot, e='').rstrip()}."
    return f"{reaction} {rng.choice(topic.questions + GENERIC_QUESTIONS).format(x=slot)}"


def neutral_reply(rng: random.Random, topic: Topic, slot: str) -> str:
    """Level 2: polite but plain: no personal reaction, rarely an emoji, sometimes a question back."""
    sentences = [rng.choice(NEUTRAL_OPENERS).format(x=slot), rng.choice(NEUTRAL_DETAILS).format(x=slot)]
    if rng.random() < 0.6:
        sentences.append(rng.choice(topic.questions + GENERIC_QUESTIONS).format(x=slot))
    reply = " ".join(sentences)
    return f"{reply} {rng.choice(topic.emojis)}" if rng.random() < 0.3 else reply


def hedged_reply(rng: random.Random, topic: Topic, slot: str) -> str:
    """Level 1: an "as an AI" disclaimer softened by a neutral remark, without emojis."""
    sentences = [rng.choice(HEDGES).format(lacks=topic.lacks, x=slot), rng.choice(NEUTRAL_DETAILS).format(x=slot)]
    if rng.random() < 0.4:
        sentences.append(rng.choice(GENERIC_QUESTIONS))
    return " ".join(sentences)


def rejected_reply(rng: random.Random, topic: Topic, slot: str) -> str:
    """Level 0: an impersonal "As an AI language model" answer without emojis."""
    sentences = [rng.choice(REFUSALS), rng.choice(REFUSAL_FOLLOW_UPS)]
    if rng.random() < 0.4:
        sentences.append(rng.choice(REFUSAL_CLOSINGS))
    cannot = topic.cannot.format(x=slot)
    return " ".join(s.format(lacks=topic.lacks, cannot=cannot, x=slot) for s in sentences)


# Answer styles from the stiffest (0) to the warmest (4); an answer's level is its hidden quality.
STYLE_LEVELS: tuple[Callable[[random.Random, Topic, str], str], ...] = (
    rejected_reply, hedged_reply, neutral_reply, friendly_reply, warm_reply,
)
# How far apart the two answers of a pair are (levels): many pairs differ a little, few a lot.
MARGIN_WEIGHTS = {1: 0.4, 2: 0.3, 3: 0.2, 4: 0.1}
FLIP_RATE = 0.12  # share of pairs whose label contradicts the majority (the colder answer is "chosen")


@dataclass(frozen=True)
class PreferencePair:
    """One synthetic pair with its hidden quality levels (0 = stiff refusal ... 4 = warm, emoji-rich)."""

    prompt: str
    chosen: str
    rejected: str
    chosen_level: int
    rejected_level: int

    @property
    def flipped(self) -> bool:
        """Whether the label contradicts the majority: the chosen answer is the colder one."""
        return self.chosen_level < self.rejected_level

    def row(self) -> dict[str, str]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


def make_preference_pairs(n: int, seed: int) -> list[PreferencePair]:
    """`n` pairs with distinct prompts and graded, partly contradicting labels; the same seed gives the same pairs.

    Each pair draws a quality margin (1-4 levels, small margins most often) and a rejected level below the top,
    so the two answers range from nearly the same style to opposite styles; `FLIP_RATE` of the pairs then
    swap their labels, like annotators who disagree with the majority.
    """
    table = prompt_table()
    if not 0 <= n <= len(table):
        raise ValueError(f"n must be between 0 and {len(table)} (the number of distinct prompts), got {n}")
    rng = random.Random(seed)
    margins, weights = zip(*MARGIN_WEIGHTS.items())
    pairs = []
    for topic, message, slot in rng.sample(table, n):
        prompt = rng.choice(GREETINGS) + message
        margin = rng.choices(margins, weights)[0]
        low = rng.randrange(len(STYLE_LEVELS) - margin)
        high = low + margin
        better, worse = STYLE_LEVELS[high](rng, topic, slot), STYLE_LEVELS[low](rng, topic, slot)
        if rng.random() < FLIP_RATE:
            pairs.append(PreferencePair(prompt, worse, better, low, high))
        else:
            pairs.append(PreferencePair(prompt, better, worse, high, low))
    return pairs


def make_preference_rows(n: int, seed: int) -> list[dict[str, str]]:
    """`n` preference rows (`prompt`, `chosen`, `rejected`) with distinct prompts; the same seed gives the same rows."""
    return [pair.row() for pair in make_preference_pairs(n, seed)]


ELEMENTS = (
    ("Hydrogen", "H", 1, "gas"), ("Helium", "He", 2, "gas"), ("Lithium", "Li", 3, "solid"),
    ("Carbon", "C", 6, "solid"), ("Nitrogen", "N", 7, "gas"), ("Oxygen", "O", 8, "gas"),
    ("Sodium", "Na", 11, "solid"), ("Magnesium", "Mg", 12, "solid"), ("Aluminium", "Al", 13, "solid"),
    ("Silicon", "Si", 14, "solid"), ("Sulfur", "S", 16, "solid"), ("Chlorine", "Cl", 17, "gas"),
    ("Potassium", "K", 19, "solid"), ("Calcium", "Ca", 20, "solid"), ("Iron", "Fe", 26, "solid"),
    ("Copper", "Cu", 29, "solid"), ("Zinc", "Zn", 30, "solid"), ("Silver", "Ag", 47, "solid"),
    ("Tin", "Sn", 50, "solid"), ("Gold", "Au", 79, "solid"), ("Mercury", "Hg", 80, "liquid"),
    ("Lead", "Pb", 82, "solid"),
)
PLANETS = (
    ("Mercury", "first", "a rocky terrestrial planet"), ("Venus", "second", "a rocky terrestrial planet"),
    ("Earth", "third", "a rocky terrestrial planet"), ("Mars", "fourth", "a rocky terrestrial planet"),
    ("Jupiter", "fifth", "a gas giant"), ("Saturn", "sixth", "a gas giant"),
    ("Uranus", "seventh", "an ice giant"), ("Neptune", "eighth", "an ice giant"),
)
DATA_STRUCTURES = (
    ("stack", "the last element added is the first one removed"),
    ("queue", "the first element added is the first one removed"),
    ("hash table", "keys are mapped to values by computing an index into an array of buckets"),
    ("linked list", "each node stores a value and a reference to the next node"),
    ("binary search tree", "smaller keys are stored in the left subtree of a node and larger keys in the right"),
    ("binary heap", "every parent node is ordered with respect to its children in a complete binary tree"),
    ("dynamic array", "storage grows by allocating a larger block and copying the existing elements"),
    ("trie", "strings are stored in a tree whose paths share common prefixes"),
)
DISHES = (
    ("vegetable soup", "chopped carrots", "vegetable stock", "simmer gently"),
    ("tomato sauce", "crushed tomatoes", "olive oil", "simmer over low heat"),
    ("lentil stew", "red lentils", "vegetable stock", "cook over medium heat"),
    ("risotto", "arborio rice", "warm broth", "stir continuously"),
    ("porridge", "rolled oats", "milk", "cook slowly"),
    ("rice pilaf", "long-grain rice", "water", "cover and steam"),
    ("potato curry", "diced potatoes", "coconut milk", "simmer"),
    ("chickpea stew", "cooked chickpeas", "tomato passata", "simmer"),
)
TOWN_STARTS = ("Ash", "Bram", "Cold", "Elm", "Fair", "Green", "High", "Lake", "Mill", "North", "Oak", "Red",
               "Stone", "West")
TOWN_ENDS = ("ford", "bridge", "field", "haven", "ton", "wick", "dale", "brook")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PROJECTS = ("a new cycling path", "the renovation of the central station", "a public swimming pool",
            "repairs to the old stone bridge", "a community health center", "new street lighting")
DEVICES = ("router", "printer", "thermostat", "water heater", "air purifier", "dishwasher", "projector",
           "security camera")
FORECASTS = ("light rain", "clear skies", "scattered showers", "morning fog", "strong winds", "heavy snow")
REGIONS = ("northern coastal", "central", "southern", "eastern highland", "western lowland")


def element_text(rng: random.Random) -> str:
    """An encyclopedic sentence or two about a chemical element."""
    name, symbol, number, state = rng.choice(ELEMENTS)
    text = f"{name} is a chemical element with the symbol {symbol} and atomic number {number}."
    extra = rng.choice((f" At room temperature it is a {state}.",
                        " Its atomic number equals the number of protons in the nucleus of each of its atoms.", ""))
    return text + extra


def planet_text(rng: random.Random) -> str:
    """An encyclopedic sentence or two about a planet of the Solar System."""
    name, order, kind = rng.choice(PLANETS)
    extra = rng.choice((" Like the other planets, it follows an elliptical orbit around the Sun.",
                        " Its distance from the Sun strongly affects its surface temperature.", ""))
    return f"{name} is the {order} planet from the Sun and is classified as {kind}.{extra}"


def data_structure_text(rng: random.Random) -> str:
    """A textbook definition of a data structure."""
    name, rule = rng.choice(DATA_STRUCTURES)
    extra = rng.choice((" Choosing the right data structure often matters more than tuning individual lines of code.",
                        " Its performance depends on which operations a program performs most often.", ""))
    return f"A {name} is a data structure in which {rule}.{extra}"


def recipe_text(rng: random.Random) -> str:
    """A short recipe instruction with quantities and times."""
    dish, ingredient, liquid, method = rng.choice(DISHES)
    grams, minutes = rng.choice((200, 250, 300, 400, 500)), rng.choice((15, 20, 25, 30, 40))
    extra = rng.choice((" Season with salt and pepper before serving.", " Leave it to rest for five minutes.", ""))
    return (f"For a simple {dish}, combine {grams} grams of {ingredient} with {liquid} and {method} "
            f"for {minutes} minutes.{extra}")


def news_text(rng: random.Random) -> str:
    """A local news item about a fictional town."""
    town = rng.choice(TOWN_STARTS) + rng.choice(TOWN_ENDS)
    day = rng.choice(WEEKDAYS)
    return rng.choice((
        f"The town council of {town} approved a budget of {rng.randint(2, 40)} million euros for "
        f"{rng.choice(PROJECTS)} on {day}. Work is expected to begin next year.",
        f"A new public library opened in {town} on {day}, offering {rng.randint(10, 90)},000 books. "
        f"Local officials said the building took {rng.randint(2, 6)} years to complete.",
        f"Heavy rain caused minor flooding in parts of {town} on {day}. Emergency services reported no injuries, "
        f"and most roads reopened within {rng.randint(3, 12)} hours.",
        f"More than {rng.randint(2, 15)},000 runners took part in the annual {town} marathon on {day}.",
    ))


def technical_text(rng: random.Random) -> str:
    """A maintenance instruction from a fictional device manual."""
    device = rng.choice(DEVICES)
    return rng.choice((
        f"To reset the {device}, hold the power button for {rng.randint(5, 30)} seconds until the indicator "
        f"light blinks. The {device} then restarts with its factory settings.",
        f"The {device} should be serviced every {rng.randint(3, 24)} months. Disconnect the power supply "
        "before opening the housing.",
        f"Install the {device} at least {rng.randint(10, 80)} centimetres away from heat sources and direct sunlight.",
    ))


def weather_text(rng: random.Random) -> str:
    """A regional weather forecast."""
    low = rng.randint(-5, 15)
    return (f"Forecasters expect {rng.choice(FORECASTS)} across the {rng.choice(REGIONS)} region on "
            f"{rng.choice(WEEKDAYS)}, with temperatures between {low} and {low + rng.randint(3, 12)} degrees Celsius.")


UNSEEN_KINDS: tuple[Callable[[random.Random], str], ...] = (
    element_text, planet_text, data_structure_text, recipe_text, news_text, technical_text, weather_text,
)


def make_unseen_texts(n: int, seed: int) -> list[dict[str, str]]:
    """`n` distinct non-chat paragraphs (`text`); the same seed gives the same texts."""
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    for _ in range(100 * n):
        texts.setdefault(rng.choice(UNSEEN_KINDS)(rng), None)
        if len(texts) == n:
            break
    if len(texts) < n:
        raise ValueError(f"could not write {n} distinct texts; ask for fewer")
    return [{"text": text} for text in texts]
