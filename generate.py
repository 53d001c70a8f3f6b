"""Generated samples in MIND's and Amazon-M2's real file formats, for runs without the real files.

$ python generate.py mind --out raw/mind --users 1000 --seed 0
$ python generate.py amazon --out raw/amazon --users 80000   # sessions, all locales: ~1,000 UK users

Then build samples from them with data.py, the same code that reads the real files:

$ python data.py --dataset mind --raw raw/mind --out data/mind --seed 0
$ python data.py --dataset amazon --raw raw/amazon --out data/amazon --locale UK

MIND: news.tsv + behaviors.tsv; Amazon-M2: products_train.csv + sessions_train.csv, written into --out with
the real files' traps (titles that open with a double quote, zero-width spaces, ids the catalogue lacks, empty
histories, descriptions with commas, quotes and line breaks, the same product under several locales). The
same seed gives byte-identical files. Nothing else reads this module: data.py knows only the file formats.
"""
import argparse
import bisect
import csv
import json
import math
import os
import random
import re

from data import AMAZON_PRODUCT_HEADER

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("dataset", choices=["mind", "amazon"], help="write a sample in this dataset's real file format")
parser.add_argument("--out", required=True, help="folder to write the raw files to")
parser.add_argument("--users", type=int, default=1000,
                    help="MIND users, or Amazon-M2 sessions over all locales (as in the real file, "
                         "few pass the filter: about 1 in 80 is a UK session with 10-25 items)")
parser.add_argument("--seed", type=int, default=0)

# ----------------------------------------------------------------------------------------------------
# Generated samples in the real file formats (see the end of this file for the vocabulary). What decides a
# ranking is held close to real rows (data.py --stats prints the profile beside them, and tests keep it there):
# - popularity is long-tailed: a few items take a large share of the clicks and many are clicked once, and
#   targets follow it, less steeply than histories do (a last click is often on news too fresh for older
#   histories to hold);
# - a MIND user reads a broad mix of categories around a favourite that drifts part-way through the
#   history, so the target's category is usually, not always, one the history holds;
# - headlines are as long as real ones; Amazon-M2 sessions are mostly short (a few percent reach the
#   paper's 10-25 window) and the longer ones go back and forth between products.
# The constants below set these shapes, chosen so that a sample of a few thousand users profiles like the
# real rows (tests hold every statistic within 20%); the generator is otherwise plain sampling from them.

CATEGORY_SHARE = {  # share of MIND's clicks per category: news and sports lead, many small ones follow
    "news": 0.26, "sports": 0.13, "finance": 0.07, "lifestyle": 0.08, "foodanddrink": 0.05, "travel": 0.05,
    "health": 0.05, "entertainment": 0.05, "tv": 0.05, "music": 0.03, "movies": 0.03, "autos": 0.04,
    "weather": 0.05, "video": 0.06,
}
FAVOURITE = 0.35  # a user's weight on their favourite category, above a mix of all of them
INTEREST_SPREAD = 0.8  # a user's factor on a category's share is Exp(1)**INTEREST_SPREAD: larger is less even
DRIFT = 0.5  # share of users whose favourite category changes part-way through the history
NEWS_PER_USER, MAX_NEWS = 2.0, 101_000  # catalogue size per user, up to MIND-large's number of news
NEWS_ZIPF, NEWS_FLAT_HEAD = 1.2, 0.022  # popularity (zipf_weights)
FRESH_TARGET = 0.35  # share of targets drawn without regard to popularity
TITLE_TAIL = 0.8  # share of headlines that carry a TAILS clause ("…, officials say")
HISTORY_DECAY = 0.06  # within the 11-26 window, each extra History id is this much rarer (in log terms)

SESSION_LOG_MEAN, SESSION_LOG_SD = 0.97, 0.67  # prev_items per session: ceil(exp(normal(mean, sd)))
PRODUCTS_PER_SESSION, MAX_PRODUCTS = 0.7, 1_500_000  # catalogue size per session, up to Amazon-M2's products
PRODUCT_ZIPF, PRODUCT_FLAT_HEAD = 1.1, 0.03  # popularity (zipf_weights)
REVISIT_MAX, REVISIT_SCALE = 0.4, 3.0  # per step, the chance to go back to a product just seen: longer sessions
# go back and forth more, up to REVISIT_MAX


def drifting_choices(rng, topics, n, n_favourites, explore=0.15):
    """n picks from `topics`: a user's few favourites, one of which is swapped for a new topic part-way
    through (so a summary has a shift to follow), with occasional clicks outside them."""
    favourites = rng.sample(topics, n_favourites)
    drift_at = rng.randint(n // 3, max(n // 3, 2 * n // 3)) if rng.random() < 0.7 else n + 1
    picks = []
    for i in range(n):
        if i == drift_at:
            favourites[rng.randrange(len(favourites))] = rng.choice([t for t in topics if t not in favourites])
        if rng.random() < explore:
            picks.append(rng.choice(topics))
        else:  # earlier favourites weigh more: a user has a main interest and side interests
            picks.append(favourites[min(int(rng.expovariate(1.2)), len(favourites) - 1)])
    return picks


def zipf_weights(rng, n, exponent, flat_head):
    """Popularity of n items in a random order: the item ranked r weighs 1 / (r + flat_head * n)**exponent, a
    long tail under a head that is flatter than a pure power law's (no single story takes every reader)."""
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    return [(r + flat_head * n) ** -exponent for r in ranks]


class Pool:
    """Items to draw from by popularity: ids with their cumulative weights."""

    def __init__(self):
        self.ids, self.cum = [], []

    def add(self, item, weight):
        self.ids.append(item)
        self.cum.append((self.cum[-1] if self.cum else 0) + weight)

    def draw(self, rng, avoid=()):
        """One id by popularity, redrawn a few times while it is in `avoid` (a reader rarely reopens a story)."""
        for _ in range(5):
            item = self.ids[bisect.bisect(self.cum, rng.random() * self.cum[-1])]
            if item not in avoid:
                break
        return item


def mind_categories(rng, n):
    """The categories of a user's n clicks: FAVOURITE of the weight on one favourite category, the rest on every
    category by its share of clicks times a random factor of the user's; for DRIFT of the users the favourite
    changes part-way through."""
    categories, shares = list(CATEGORY_SHARE), list(CATEGORY_SHARE.values())
    spread = [share * rng.expovariate(1) ** INTEREST_SPREAD for share in shares]
    total = sum(spread)
    first = rng.choices(range(len(shares)), weights=shares)[0]
    then = rng.choices(range(len(shares)), weights=[s * (k != first) for k, s in enumerate(shares)])[0]
    drift_at = rng.randint(n // 3, max(n // 3, 2 * n // 3)) if rng.random() < DRIFT else n
    picks = []
    for favourite, count in ((first, drift_at), (then, n - drift_at)):
        weights = [(1 - FAVOURITE) * w / total + FAVOURITE * (k == favourite) for k, w in enumerate(spread)]
        picks += rng.choices(categories, weights=weights, k=count)
    return picks


def history_length(rng):
    """History ids of a MIND user: about two thirds in the paper's 11-26 window, the shorter ones commoner;
    the rest exercise the filter."""
    if rng.random() < 0.65:
        while True:  # a geometric tail, cut to the window
            extra = int(rng.expovariate(HISTORY_DECAY))
            if extra <= 15:
                return 11 + extra
    return rng.choice([rng.randint(1, 10), rng.randint(27, 45)])


def fill(rng, template, **fixed):
    """The template with each {slot} replaced: by `fixed[slot]` when given, else a random SLOTS[slot] word."""
    return re.sub(r"\{(\w+)\}", lambda m: fixed.get(m.group(1)) or rng.choice(SLOTS[m.group(1)]), template)


def write_mind_news(rng, path, n_news):
    """news.tsv with n_news stories; returns {category: Pool of its news ids}."""
    subcats = [(cat, sub) for cat, subs in NEWS.items() for sub in subs]
    categories = list(CATEGORY_SHARE)
    popularity = zipf_weights(rng, n_news, NEWS_ZIPF, NEWS_FLAT_HEAD)
    pools = {cat: Pool() for cat in categories}
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for k in range(n_news):
            if k < len(subcats):  # every subcategory once, then as many stories as its category's share of clicks
                cat, sub = subcats[k]
            else:
                cat = rng.choices(categories, weights=[CATEGORY_SHARE[c] for c in categories])[0]
                sub = rng.choice(list(NEWS[cat]))
            nid = f"N{10000 + k * 7 + rng.randrange(7)}"
            title = fill(rng, rng.choice(NEWS[cat][sub]))
            if rng.random() < TITLE_TAIL:
                title += fill(rng, rng.choice(TAILS))
            r = rng.random()
            if r < 0.04:  # real titles can start with a double quote: a CSV reader would mangle the row
                title = f'"{title.split(":")[0]}" {rng.choice(["is back", "stuns fans", "sparks debate"])}'
            elif r < 0.06:  # and carry zero-width spaces
                title = title.replace(" ", " \u200b", 1)
            abstract = "" if rng.random() < 0.15 else fill(rng, rng.choice(ABSTRACTS))
            entities = "[]" if rng.random() < 0.5 else json.dumps([{
                "Label": title.split()[0], "Type": "O", "WikidataId": f"Q{rng.randrange(10**6)}", "Confidence": 1.0,
                "OccurrenceOffsets": [0], "SurfaceForms": [title.split()[0]]}])
            f.write(f"{nid}\t{cat}\t{sub}\t{title}\t{abstract}\thttps://assets.msn.com/labs/mind/AA{nid[1:]}.html"
                    f"\t{entities}\t[]\n")
            pools[cat].add(nid, popularity[k])
    return pools


def mind_history(rng, pools):
    """A user's History ids, oldest first: empty for a few users, and with the real file's flaws."""
    n = 0 if rng.random() < 0.05 else history_length(rng)
    history = []
    for i, category in enumerate(mind_categories(rng, n)):
        pool = pools[category]
        if i == n - 1 and rng.random() < FRESH_TARGET:  # the last id is the target
            history.append(rng.choice(pool.ids))
        else:
            history.append(pool.draw(rng, avoid=history))
    if n and rng.random() < 0.08:  # a history can repeat an id
        j = rng.randrange(n)
        history.insert(j, history[rng.randrange(j + 1)])
    if n and rng.random() < 0.05:  # and name news that news.tsv lacks
        history.insert(rng.randrange(len(history)), f"N{rng.randrange(10**6, 2 * 10**6)}")
    return history


def generate_mind(out, n_users, seed):
    rng = random.Random(seed)
    assert set(CATEGORY_SHARE) == set(NEWS), "each category of NEWS needs its CATEGORY_SHARE, and only those"
    n_news = min(max(2000, int(NEWS_PER_USER * n_users)), MAX_NEWS)
    pools = write_mind_news(rng, os.path.join(out, "news.tsv"), n_news)
    all_news = [nid for cat in CATEGORY_SHARE for nid in pools[cat].ids]
    rows = []
    for u in range(n_users):
        user = f"U{100 + u * 3 + rng.randrange(3)}"
        history = mind_history(rng, pools)
        n_rows = rng.randint(1, 4)
        empty_first = n_rows > 1 and rng.random() < 0.05  # the first row with a non-empty History is the one used
        for r in range(n_rows):
            shown = rng.choices(all_news, k=4)
            impressions = " ".join(f"{x}-{int(i == 0)}" for i, x in enumerate(shown))
            hist = "" if (r == 0 and empty_first) else " ".join(history)
            rows.append((user, hist, impressions))
    rng.shuffle(rows)
    with open(os.path.join(out, "behaviors.tsv"), "w", encoding="utf-8", newline="\n") as f:
        for k, (user, hist, impressions) in enumerate(rows, 1):
            day, hour, minute, second = rng.randint(9, 15), rng.randint(1, 12), rng.randrange(60), rng.randrange(60)
            stamp = f"11/{day}/2019 {hour}:{minute:02d}:{second:02d} {rng.choice(['AM', 'PM'])}"
            f.write(f"{k}\t{user}\t{stamp}\t{hist}\t{impressions}\n")
    print(f"generated MIND sample in {out}: {n_news:,} news, {n_users:,} users, {len(rows):,} behaviors rows")


def numpy_list(ids, width=75):
    """An id list as numpy prints it: "['a' 'b' ...]", wrapped onto new lines (starting with a space) at `width`
    characters."""
    lines, line = [], "["
    for i, x in enumerate(ids):
        token = f"'{x}'"
        if i and len(line) + 1 + len(token) + 1 > width:
            lines.append(line)
            line = " " + token
        else:
            line += (" " if i else "") + token
    return "\n".join(lines + [line + "]"])


def product_id(rng, book):
    if book:  # ISBN-10-like ids, some ending in X
        digits = "".join(rng.choice("0123456789") for _ in range(9))
        return digits + rng.choice("0123456789X")
    return "B0" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))


LOCALES = ["UK", "DE", "JP", "FR", "IT", "ES"]


def generate_amazon(out, n_sessions, seed):
    rng = random.Random(seed)
    intents = list(PRODUCTS)
    n_products = min(max(2000, int(n_sessions * PRODUCTS_PER_SESSION)), MAX_PRODUCTS)
    popularity = zipf_weights(rng, n_products, PRODUCT_ZIPF, PRODUCT_FLAT_HEAD)
    pools = {(loc, t): Pool() for loc in LOCALES for t in intents}
    with open(os.path.join(out, "products_train.csv"), "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(AMAZON_PRODUCT_HEADER)
        for k in range(n_products):
            intent = intents[k % len(intents)]
            spec = PRODUCTS[intent]
            pid = product_id(rng, intent == "books" and rng.random() < 0.6)
            noun = rng.choice(list(spec["nouns"]))
            brand, colour = rng.choice(spec["brands"]), rng.choice(SLOTS["colour"])
            material, size = rng.choice(spec["nouns"][noun]), rng.choice(spec["sizes"])
            title = fill(rng, rng.choice(spec["titles"]), brand=brand, noun=noun, colour=colour, material=material,
                         size=size)
            size = size if rng.random() < 0.5 else ""
            model = f"{brand[:3].upper()}-{rng.randrange(100, 999)}" if rng.random() < 0.4 else ""
            author = rng.choice(SLOTS["author"]) if intent == "books" else ""
            sentences = rng.sample(spec["descs"], rng.randint(1, 2)) + rng.sample(DESC_EXTRAS, rng.randint(0, 2))
            desc = " ".join(fill(rng, s, noun=noun.lower(), material=material.lower()) for s in sentences)
            desc = desc[0].upper() + desc[1:]
            if rng.random() < 0.1:  # descriptions hold commas, quotes and line breaks: CSV quoting must carry them
                desc += '\nIncludes: 1 x ' + noun.lower() + ', "ready to use" out of the box.'
            price = round(rng.uniform(*spec["price"]), 2)
            home = rng.choice(["UK", "UK", "DE", "JP", "FR", "IT", "ES"])
            others = [loc for loc in LOCALES if loc != home and rng.random() < 0.15]
            for loc in [home] + others:  # the same id under several locales, each with its own row
                local_price = price if loc == home else round(price * rng.uniform(0.9, 1.2), 2)
                row = [pid, loc, title, f"{local_price}", brand, colour if rng.random() < 0.8 else "", size, model,
                       material if rng.random() < 0.7 else "", author, desc if rng.random() < 0.9 else ""]
                writer.writerow(row)
                pools[(loc, intent)].add(pid, popularity[k])
    with open(os.path.join(out, "sessions_train.csv"), "w", encoding="utf-8", newline="") as f:
        f.write("prev_items,next_item,locale\n")
        for _ in range(n_sessions):
            loc = rng.choice(["UK", "UK", "UK", "DE", "JP", "FR", "IT", "ES"])
            n = math.ceil(math.exp(rng.gauss(SESSION_LOG_MEAN, SESSION_LOG_SD)))
            revisit = REVISIT_MAX * (1 - math.exp(-(n - 1) / REVISIT_SCALE))
            open_intents = [t for t in intents if pools[(loc, t)].ids]
            *picks, last = drifting_choices(rng, open_intents, n + 1, rng.randint(1, 2), explore=0.08)
            prev = []
            for t in picks:
                if prev and rng.random() < revisit:
                    prev.append(rng.choice(prev[-3:]))
                else:
                    prev.append(pools[(loc, t)].draw(rng, avoid=prev))
            target = pools[(loc, last)].draw(rng, avoid=prev)  # a product the session has not shown yet
            f.write(f'"{numpy_list(prev)}",{target},{loc}\n')
    print(f"generated Amazon-M2 sample in {out}: {n_products:,} products, {n_sessions:,} sessions")

# ----------------------------------------------------------------------------------------------------
# Vocabulary of the generated samples: MIND's real categories and subcategories, headline templates,
# and product families with brands, materials and descriptions. Edit freely: nothing depends on it.

SLOTS = {
    "team": ["Patriots", "Cowboys", "Packers", "Chiefs", "Eagles", "49ers", "Steelers", "Seahawks", "Bears", "Rams"],
    "nba": ["Lakers", "Celtics", "Warriors", "Bucks", "Knicks", "Heat", "Nuggets", "Suns"],
    "club": ["Arsenal", "Barcelona", "Real Madrid", "Bayern München", "Liverpool", "Juventus", "Paris Saint-Germain"],
    "player": ["Tom Brady", "Patrick Mahomes", "LeBron James", "Stephen Curry",
               "Lionel Messi", "Zlatan Ibrahimović", "Aaron Rodgers"],
    "golfer": ["Tiger Woods", "Rory McIlroy", "Brooks Koepka", "Jordan Spieth"],
    "tennis": ["Serena Williams", "Rafael Nadal", "Novak Đoković", "Naomi Osaka"],
    "city": ["Seattle", "Chicago", "Houston", "Miami", "Denver",
             "Boston", "Atlanta", "Phoenix", "Portland", "Nashville"],
    "state": ["Texas", "Ohio", "California", "Florida", "Michigan", "Georgia", "Oregon", "Arizona"],
    "country": ["China", "Mexico", "Canada", "France", "Germany", "Japan", "Brazil", "India", "Türkiye"],
    "politician": ["the Senate", "the House", "the governor", "the White House", "city council", "the mayor"],
    "policy": ["health care", "the budget", "impeachment", "tariffs", "immigration", "gun control", "climate policy"],
    "company": ["Apple", "Boeing", "Tesla", "Amazon", "Walmart", "Nestlé", "Uber", "Netflix", "Ford", "Disney"],
    "celebrity": ["Taylor Swift", "Beyoncé", "Brad Pitt", "Jennifer Lopez",
                  "Kim Kardashian", "Ryan Reynolds", "Zoë Kravitz"],
    "movie": ["Joker", "Frozen 2", "The Irishman", "Star Wars", "Ford v Ferrari", "Knives Out"],
    "show": ["The Voice", "Dancing With the Stars", "The Crown", "Stranger Things", "The Mandalorian"],
    "dish": ["chicken soup", "pumpkin pie", "beef stew", "mac and cheese",
             "crème brûlée", "banana bread", "lasagna"],
    "ingredient": ["garlic", "butter", "pumpkin", "cinnamon", "avocado", "sweet potatoes", "cranberries"],
    "place": ["national park", "beach town", "small town", "ski resort", "island", "road trip stop"],
    "airline": ["Southwest Airlines", "Delta", "United", "American Airlines", "JetBlue"],
    "car": ["Ford F-150", "Tesla Model 3", "Toyota RAV4", "Jeep Wrangler", "Honda Civic", "Chevrolet Corvette"],
    "animal": ["dog", "cat", "bear", "puppy", "horse", "owl", "dolphin"],
    "number": ["3", "5", "7", "10", "12", "15", "20", "25", "50"],
    "condition": ["diabetes", "heart disease", "insomnia", "back pain", "high blood pressure", "migraines"],
    "weather": ["snowstorm", "arctic blast", "heavy rain", "severe storms", "record cold", "heat wave"],
    "colour": ["Navy", "Black", "White", "Grey", "Ochre", "Sage Green", "Red", "Blush Pink", "Charcoal"],
    "author": ["J. K. Rowling", "Stephen King", "Jamie Oliver", "Yotam Ottolenghi",
               "Agatha Christie", "Haruki Murakami", "Mary Berry"],
    "feature": ["non-slip", "quick-drying", "machine washable", "extra thick",
                "eco-friendly", "heavy duty", "compact", "lightweight"],
    "use": ["everyday use", "gifts", "small spaces", "families", "travel", "beginners", "professionals"],
}

NEWS = {
    "sports": {
        "football_nfl": ["{team} beat {team} in overtime thriller", "{player} leads {team} to comeback win",
                         "{team} quarterback out for season with knee injury",
                         "Week {number} NFL power rankings: {team} climb",
                         "{team} fire head coach after {number} straight losses"],
        "basketball_nba": ["{nba} rout {nba} behind {number} threes", "{player} scores {number} in {nba} win",
                           "{nba} trade rumors: what comes next", "Injury update: {nba} star to miss {number} games"],
        "soccer": ["{club} edge {club} in Champions League clash", "{player} scores twice as {club} go top",
                   "{club} manager under pressure after defeat", "Transfer talk: {club} eye {number} million move"],
        "golf": ["{golfer} takes lead into final round", "{golfer} withdraws from tournament with injury",
                 "How {golfer} won in {city}"],
        "tennis": ["{tennis} advances to the semifinals", "{tennis} upset in straight sets",
                   "{tennis} wins title in {city}"],
    },
    "news": {
        "newspolitics": ["{politician} votes on {policy} bill", "What the {policy} fight means for {state}",
                         "Poll: voters in {state} split on {policy}", "{politician} delays decision on {policy}"],
        "newsus": ["{city} police search for suspect after shooting", "{state} town recovers after {weather}",
                   "School board in {city} approves new plan", "{number} things to know about the {city} election"],
        "newsworld": ["{country} and {country} agree on trade deal", "Protests grow in {country} capital",
                      "{country} election results: what we know", "Earthquake shakes northern {country}"],
        "newscrime": ["Man arrested after chase through {city}", "{city} detectives investigate break-ins",
                      "Seattle police officer fires gun while breaking up scuffle",
                      "Jury finds {city} man guilty of fraud"],
        "newsscienceandtechnology": ["Scientists discover new species of {animal}", "{company} unveils new AI chip",
                                     "NASA shares stunning images of Jupiter", "Why {company} is betting on robots"],
    },
    "finance": {
        "finance-companies": ["{company} shares jump after earnings beat", "{company} to cut {number},000 jobs",
                              "{company} CEO steps down", "Why {company} stock fell {number}% today"],
        "markets": ["Dow closes at record high as {company} rallies", "Stocks slide on {country} trade fears",
                    "{number} stocks to buy before the end of the year"],
        "personalfinance": ["{number} ways to save money on groceries", "How to pay off debt in {number} months",
                            "The best credit cards for {use}", "Retirement: {number} mistakes to avoid"],
        "finance-real-estate": ["Home prices in {city} hit new high",
                                "{number} cheapest places to buy a house in {state}",
                                "Mortgage rates fall for {number}th week"],
    },
    "foodanddrink": {
        "recipes": ["{number} cozy {dish} recipes for fall", "The best {dish} you'll ever make",
                    "3 new {ingredient} recipes you'll be making all season", "Easy {dish} with {ingredient}"],
        "restaurantsandnews": ["The best {dish} in {city}", "{company} adds {dish} to its menu",
                               "{number} restaurants closing in {state}", "Chef opens new bistro in {city}"],
        "quickandeasy": ["{number}-minute dinners with {ingredient}", "Sheet-pan {dish} for busy weeknights"],
    },
    "travel": {
        "travelnews": ["{airline} flight diverted after passenger disturbance", "{airline} adds new routes to {city}",
                       "Airport delays pile up ahead of Thanksgiving", "{airline} changes its baggage rules"],
        "traveltripideas": ["The spookiest {place} in every state", "{number} best {place}s to visit this winter",
                            "A perfect weekend in {city}", "Hidden gems: the most charming {place} in {state}"],
    },
    "health": {
        "wellness": ["{number} habits of people who never get sick", "Why you're always tired, according to doctors",
                     "How to sleep better in {number} steps"],
        "medical": ["New treatment shows promise for {condition}", "Early signs of {condition} you should know",
                    "Doctors warn about {condition} in young adults"],
        "nutrition": ["{number} foods that help with {condition}", "Is {ingredient} good for you?"],
    },
    "entertainment": {
        "celebrity": ["{celebrity} stuns on the red carpet", "{celebrity} opens up about new album",
                      "{celebrity} and {celebrity} spotted together in {city}"],
    },
    "movies": {
        "movienews": ["'{movie}' tops the box office again", "{celebrity} joins the cast of '{movie}' sequel",
                      "Review: '{movie}' is the film of the year"],
    },
    "tv": {
        "tvnews": ["'{show}' finale recap: {number} big moments", "'{show}' renewed for another season",
                   "{celebrity} eliminated from '{show}'"],
    },
    "music": {
        "musicnews": ["{celebrity} announces {number}-city tour", "{celebrity} tops the charts with new single"],
    },
    "lifestyle": {
        "lifestylehomeandgarden": ["Genius tiny homes for big families",
                                   "{number} ways to make a small kitchen feel bigger",
                                   "How to keep your garden alive through winter"],
        "lifestyleroyals": ["Prince Harry and Meghan share new photo", "The Queen's {number} most memorable outfits",
                            "Royal family plans {city} visit"],
        "pets": ["{number} {animal} breeds that are great with kids",
                 "This {animal} was rescued from a storm drain in {city}"],
    },
    "autos": {
        "autosnews": ["{car} recalled over brake issue", "The {number} most reliable cars of the year",
                      "{company} unveils electric pickup"],
        "autosreview": ["Review: the new {car} is better than ever", "{car} vs {car}: which one to buy"],
    },
    "weather": {
        "weathertopstories": ["{weather} to hit {state} this weekend", "{city} braces for {weather}",
                              "Forecast: {weather} expected across the Midwest"],
    },
    "video": {
        "animals": ["Watch: {animal} plays in the snow in {city}", "Baby {animal} meets its family for the first time"],
        "news": ["Man testing new tires crashes into gas station", "Watch: firefighters rescue {animal} in {city}"],
    },
}

TAILS = [  # clauses that real headlines carry after their subject
    ", officials say", " after weeks of speculation", ": here's what we know so far", ", and why it matters",
    " for the first time in {number} years", ", according to a new report", " as fans react on social media",
    " ahead of the busy holiday weekend", ": what you need to know", ", and people can't stop talking about it",
    " in {city} on Tuesday night", " despite growing concerns from experts", ", sources say",
    " — and the photos are stunning", " after a surprising turn of events", ": see the full list",
    " this week, and experts weigh in", " with {number} days to go", " amid a wave of criticism",
]

ABSTRACTS = [
    "Here's what you need to know about the story everyone in {city} is talking about.",
    "The {number} details that matter, and what happens next.",
    "Experts weigh in on what it means for people in {state}.",
    "From {city} to {country}, here is the full story.",
    "It took {number} years, but it finally happened — and fans couldn’t be happier.",
]

DESC_EXTRAS = [  # sentences any product description may add
    "Package includes 1 x {noun} and a user guide.", "Made to a high standard and tested for quality and safety.",
    "If you have any questions, please contact us and we will reply within 24 hours.",
    "Please allow 1-2 cm difference due to manual measurement.", "Colours may vary slightly from the photos.",
    "Our {noun} makes a thoughtful gift for birthdays, Christmas and housewarmings.",
]

PRODUCTS = {
    "bath": {"brands": ["Keplin", "Olivia Rocco", "Dreamscene", "Sleepdown", "Homescapes"],
             "nouns": {"Bath Mat": ["Rubber", "Microfibre", "Memory Foam"],
                       "Bath Towel Set": ["Egyptian Cotton", "Bamboo", "Cotton"],
                       "Bath Rug": ["Chenille", "Microfibre"], "Shower Curtain": ["Polyester", "PEVA"],
                       "Hand Towels": ["Cotton", "Bamboo"]},
             "sizes": ["50 x 80 cm", "60 x 100 cm", "Pack of 4", "Standard"],
             "titles": ["{brand} {feature} {noun}, {colour}",
                        "{brand} {material} {noun} for Bathroom - {feature}, {colour}",
                        "Luxury {material} {noun} by {brand}, {feature}"],
             "descs": ["Super soft {material} {noun}, {feature} and water absorbent. Ideal for {use}.",
                       "This {noun} is made from 100% {material}; {feature}, easy to clean and built to last."],
             "price": (4.5, 35.0)},
    "kitchen": {"brands": ["Tefal", "Joseph Joseph", "Salter", "KitchenCraft", "Le Creuset"],
                "nouns": {"Frying Pan": ["Non-Stick Aluminium", "Cast Iron", "Stainless Steel"],
                          "Knife Set": ["Stainless Steel", "Ceramic"], "Chopping Board": ["Bamboo", "Oak", "Plastic"],
                          "Casserole Dish": ["Cast Iron", "Stoneware"], "Kettle": ["Stainless Steel", "Glass"]},
                "sizes": ["24 cm", "28 cm", "1.7 L", "Set of 3"],
                "titles": ["{brand} {material} {noun}, {feature}, {colour}", "{brand} {noun} - {material}, {feature}"],
                "descs": ["A {feature} {noun} in {material} that heats evenly. Dishwasher safe; perfect for {use}.",
                          "Cook like a pro with this {material} {noun}. {feature} design for {use}."],
                "price": (8.0, 120.0)},
    "phone": {"brands": ["Anker", "Spigen", "ESR", "Belkin", "UGREEN"],
              "nouns": {"USB-C Charger": ["GaN", "Plastic"], "Phone Case": ["Silicone", "TPU", "Leather"],
                        "Screen Protector": ["Tempered Glass"], "Power Bank": ["Aluminium", "Plastic"],
                        "Charging Cable": ["Nylon Braided", "TPE"]},
              "sizes": ["1 m", "2 m", "10000 mAh", "20000 mAh", "Pack of 2"],
              "titles": ["{brand} {noun} for iPhone 14, {feature}, {colour}", "{brand} {material} {noun}, {feature}"],
              "descs": ["{feature} {noun} with {material} finish. Fast charging and wide compatibility for {use}.",
                        "Protect your phone with this {material} {noun}: {feature}, precise cut-outs."],
              "price": (5.0, 45.0)},
    "books": {"brands": ["Penguin", "HarperCollins", "Bloomsbury", "Vintage", "Ebury"],
              "nouns": {n: ["Paperback", "Hardcover"]
                        for n in ["Cookbook", "Crime Novel", "Fantasy Novel", "Children's Picture Book", "Biography"]},
              "sizes": ["320 pages", "416 pages", "288 pages"],
              "titles": ["The {colour} House: A {noun} ({material})", "Simply Delicious: {noun} for {use}",
                         "Murder at the {place}: A {noun}"],
              "descs": ["The bestselling {noun} everyone is talking about, now in {material}.",
                        "A {noun} for {use}, from a much-loved author; {material}."],
              "price": (3.99, 28.0)},
    "toys": {"brands": ["LEGO", "Playmobil", "Hasbro", "Melissa & Doug", "VTech"],
             "nouns": {"Building Set": ["Plastic"], "Board Game": ["Cardboard"], "Jigsaw Puzzle": ["Wood", "Cardboard"],
                       "Plush Toy": ["Plush", "Organic Cotton"], "Remote Control Car": ["Plastic", "Metal"]},
             "sizes": ["Ages 3+", "Ages 6+", "Ages 8-12", "500 pieces"],
             "titles": ["{brand} {noun}, {colour}, {feature}", "{brand} {material} {noun} for Kids"],
             "descs": ["Hours of fun with this {material} {noun}. A great gift for {use}.",
                       "{feature} {noun} that sparks creativity; made from safe {material}."],
             "price": (6.0, 90.0)},
    "garden": {"brands": ["Gardena", "Spear & Jackson", "Bosch", "Kingfisher", "Hozelock"],
               "nouns": {"Garden Hose": ["Rubber", "PVC"], "Pruning Shears": ["Carbon Steel", "Stainless Steel"],
                         "Solar Lights": ["Plastic", "Glass"],
                         "Plant Pots": ["Terracotta", "Ceramic", "Recycled Plastic"],
                         "Lawn Mower": ["Steel", "Plastic"]},
               "sizes": ["15 m", "30 m", "Set of 10", "Pack of 3"],
               "titles": ["{brand} {feature} {noun}, {colour}", "{brand} {material} {noun} for Garden and Patio"],
               "descs": ["{feature} {noun} made of {material}, weatherproof and ready for {use}.",
                         "Keep your garden tidy with this {material} {noun}; {feature}."],
               "price": (7.0, 150.0)},
    "beauty": {"brands": ["NIVEA", "Creightons", "The Body Shop", "Garnier", "L'Oréal"],
               "nouns": {n: ["Almond Oil", "Shea Butter", "Vitamin C", "Aloe Vera", "Mango & Papaya"]
                         for n in ["Shower Creme", "Body Lotion", "Face Serum", "Shampoo", "Hand Cream"]},
               "sizes": ["250 ml", "500 ml", "50 ml", "Pack of 6"],
               "titles": ["{brand} {noun} with {material} ({size})", "{brand} Care {noun} Soft, {material}, {feature}"],
               "descs": ["Caring {noun} enriched with {material}, moisturising with a mild scent. "
                         "Vegan and cruelty free.",
                         "{feature} {noun} with {material} for soft, nourished skin."],
               "price": (1.0, 25.0)},
    "fitness": {"brands": ["Gymshark", "Reebok", "Bowflex", "Myprotein", "Decathlon"],
                "nouns": {"Yoga Mat": ["TPE", "Natural Rubber", "Cork"], "Dumbbell Set": ["Neoprene", "Cast Iron"],
                          "Resistance Bands": ["Latex", "Fabric"], "Protein Powder": ["Whey", "Pea Protein"],
                          "Running Shoes": ["Mesh", "Knit"]},
                "sizes": ["6 mm", "2 x 5 kg", "1 kg", "UK 9", "Set of 5"],
                "titles": ["{brand} {feature} {noun}, {colour}", "{brand} {material} {noun} for Home Workouts"],
                "descs": ["{feature} {noun} in {material}, ideal for {use} and home gyms.",
                          "Train harder with this {material} {noun}: {feature} and comfortable."],
                "price": (9.0, 80.0)},
    "audio": {"brands": ["Sony", "JBL", "Bose", "Sennheiser", "Soundcore"],
              "nouns": {"Wireless Earbuds": ["Plastic"], "Bluetooth Speaker": ["Fabric", "Rubberised Plastic"],
                        "Over-Ear Headphones": ["Protein Leather", "Aluminium"], "Soundbar": ["Aluminium", "Fabric"]},
              "sizes": ["Standard", "Mini", "Pro"],
              "titles": ["{brand} {noun} with Noise Cancelling, {colour}", "{brand} {feature} {noun}, 30h Battery"],
              "descs": ["Rich sound from a {feature} {noun}; {material} finish and long battery life for {use}.",
                        "{noun} with deep bass and clear calls, {material} build."],
              "price": (19.0, 300.0)},
}


def main(argv=None):
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    (generate_mind if args.dataset == "mind" else generate_amazon)(args.out, args.users, args.seed)


if __name__ == "__main__":
    main()
