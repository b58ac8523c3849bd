"""Author–year citations whose bibliography labels read exactly like the citations.

The chapters cite with ``{cite:t}`` ("Vaswani et al. (2017)") and ``{cite:p}``
("(Vaswani et al., 2017)"). Out of the box, sphinxcontrib-bibtex writes those in square
brackets and lists the bibliography under alpha labels such as "[VSP+17]", so a reader
cannot match a citation to its entry at a glance. This extension registers:

* ``author_year_round`` (for ``bibtex_reference_style``): the author–year citations of
  sphinxcontrib-bibtex, in round brackets;
* ``course_author_year`` (for ``bibtex_default_style``): entries sorted by author, year and
  title, each labelled "Vaswani et al., 2017", with the names written by the same name
  style the citations use; an arXiv paper shows its id once, as a link, whether the entry
  gives ``eprint``, an ``https://arxiv.org/abs/…`` ``url``, an "arXiv preprint arXiv:…"
  journal, or several of them.

Two entries that would share a label get "a", "b", … after the year.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pybtex.plugin
import sphinxcontrib.bibtex.plugin
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.template import href, join, sentence
from sphinx.application import Sphinx
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

ARXIV_ABS = re.compile(r"https?://arxiv\.org/abs/(?P<id>[^\s/]+)/?")
ARXIV_JOURNAL = re.compile(r"arXiv preprint arXiv:(?P<id>\S+)")


def arxiv_id(entry) -> str:
    """The entry's arXiv id, from ``eprint``, an arXiv ``url`` or an "arXiv preprint" journal."""
    if entry.fields.get("eprint"):
        return entry.fields["eprint"]
    for name, pattern in (("url", ARXIV_ABS), ("journal", ARXIV_JOURNAL)):
        match = pattern.fullmatch(entry.fields.get(name, ""))
        if match:
            return match["id"]
    return ""


def _round() -> BracketStyle:
    return BracketStyle(left="(", right=")")


@dataclass
class RoundAuthorYearReferenceStyle(AuthorYearReferenceStyle):
    """sphinxcontrib-bibtex's author–year citations, in round brackets."""

    bracket_parenthetical: BracketStyle = field(default_factory=_round)
    bracket_textual: BracketStyle = field(default_factory=_round)
    bracket_author: BracketStyle = field(default_factory=_round)
    bracket_label: BracketStyle = field(default_factory=_round)
    bracket_year: BracketStyle = field(default_factory=_round)


def _last_names(entry) -> list[str]:
    """The persons' names as the citations write them (sphinxcontrib-bibtex's "last" style)."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    style = pybtex.plugin.find_plugin("pybtex.style.names", "last")()
    return [style.format(person, abbr=True).format().render_as("text") for person in persons]


def author_year_label(entry) -> str:
    """ "Raschka, 2024", "Hendrycks and Gimpel, 2016" or "Vaswani et al., 2017"."""
    names = _last_names(entry)
    if not names:
        who = entry.fields.get("title", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels that repeat the in-text citation; "a", "b", … tell apart equal ones."""

    def format_labels(self, sorted_entries: Iterable) -> Iterator[str]:
        entries = list(sorted_entries)
        labels = [author_year_label(e) for e in entries]
        counts = Counter(labels)
        seen: Counter[str] = Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                yield f"{label}{chr(ord('a') + seen[label] - 1)}"
            else:
                yield label


class AuthorYearStyle(AlphaStyle):
    """Entries sorted by author, year and title (as alpha), with author–year labels."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.label_style = AuthorYearLabelStyle()
        self.format_labels = self.label_style.format_labels

    def get_article_template(self, e):
        # an arXiv preprint filed as an article: no journal, its id as a link (see format_web_refs)
        if ARXIV_JOURNAL.fullmatch(e.fields.get("journal", "")):
            return self.get_misc_template(e)
        return super().get_article_template(e)

    def format_web_refs(self, e):
        url = e.fields.get("url", "")
        arxiv = arxiv_id(e)
        if arxiv and (not url or ARXIV_ABS.fullmatch(url)):  # one arXiv link, not a URL and an id
            return sentence[href(join["https://arxiv.org/abs/", arxiv])[join["arXiv:", arxiv]]]
        return super().format_web_refs(e)


pybtex.plugin.register_plugin("pybtex.style.formatting", "course_author_year", AuthorYearStyle)
sphinxcontrib.bibtex.plugin.register_plugin(
    "sphinxcontrib.bibtex.style.referencing", "author_year_round", RoundAuthorYearReferenceStyle
)


def setup(app: Sphinx) -> dict:
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
