"""Document parser: split a document, analyse it in parallel, assemble a summary.

``split`` cuts a small Markdown-style document into sections at its ``##``
headings. Four analysers then run in parallel, each over all the sections:
word counts, the outline of headings, open action items (lines starting with
``TODO:``) and the most frequent words. ``assemble`` waits for all four and
writes the summary.

Run from the repository root:  python examples/uses/document_parser.py
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import runfox as rfx

DOCUMENT = """\
# Skerry Light: keeper's handover notes

## Lamp and lens
The lamp turns once every twenty seconds. The lens was cleaned on Tuesday and the
brass fittings polished. The spare bulbs are in the tin trunk under the stairs.
TODO: order two spare bulbs before the winter boat stops running.

## Fog signal
The fog horn compressor starts slowly in cold weather. Run it for five minutes at
dusk when fog is forecast. The horn sounds two blasts every minute.
TODO: replace the cracked gauge glass on the compressor.

## Stores
Fresh water, lamp oil and tinned food are counted every Sunday. The water tank is
two thirds full. Oil for the lamp should last until the spring boat.

## Visitors
The supply boat calls on the first Monday of each month, weather allowing. Birders
sometimes land on the north shingle; they must keep clear of the tern colony.
TODO: repaint the landing notice at the north shingle.
"""

SPEC = """
name: handover-notes
steps:
  - id: split
    fn: split_sections
    input:
      text: {"var": "input.text"}

  - id: word_counts
    fn: count_words
    depends_on: [split]
    input: {sections: {"var": "steps.split.output.sections"}}
  - id: outline
    fn: outline
    depends_on: [split]
    input: {sections: {"var": "steps.split.output.sections"}}
  - id: action_items
    fn: action_items
    depends_on: [split]
    input: {sections: {"var": "steps.split.output.sections"}}
  - id: keywords
    fn: keywords
    depends_on: [split]
    input: {sections: {"var": "steps.split.output.sections"}}

  - id: assemble
    fn: assemble
    depends_on: [word_counts, outline, action_items, keywords]
    input:
      title: {"var": "steps.split.output.title"}
      words: {"var": "steps.word_counts.output.per_section"}
      total: {"var": "steps.word_counts.output.total"}
      outline: {"var": "steps.outline.output.headings"}
      todo: {"var": "steps.action_items.output.todo"}
      keywords: {"var": "steps.keywords.output.top"}

outputs:
  title: {"var": "steps.split.output.title"}
  sections: {"var": "steps.split.output.count"}
  total_words: {"var": "steps.word_counts.output.total"}
  open_items: {"var": "steps.assemble.output.open_items"}
  keywords: {"var": "steps.keywords.output.top"}
  summary: {"var": "steps.assemble.output.summary"}
"""

# Words of four letters or more that say nothing about the subject (shorter ones are
# ignored anyway).
STOPWORDS = {
    "each", "every", "from", "once", "should", "that", "their", "there", "they", "this",
    "under", "until", "when", "with",
}


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def execute(fn: str, inputs: dict[str, Any]) -> dict[str, Any]:
    if fn == "split_sections":
        title, sections = "", []
        for line in inputs["text"].splitlines():
            if line.startswith("## "):
                sections.append({"heading": line[3:].strip(), "lines": []})
            elif line.startswith("# "):
                title = line[2:].strip()
            elif sections and line.strip():
                sections[-1]["lines"].append(line.strip())
        return {"title": title, "sections": sections, "count": len(sections)}
    if fn == "count_words":
        per = {s["heading"]: len(words_of(" ".join(s["lines"]))) for s in inputs["sections"]}
        return {"per_section": per, "total": sum(per.values())}
    if fn == "outline":
        return {"headings": [f"{i}. {s['heading']}"
                             for i, s in enumerate(inputs["sections"], 1)]}
    if fn == "action_items":
        todo = [{"section": s["heading"], "item": line[len("TODO:"):].strip()}
                for s in inputs["sections"] for line in s["lines"]
                if line.startswith("TODO:")]
        return {"todo": todo}
    if fn == "keywords":
        counts = Counter(w for s in inputs["sections"]
                         for line in s["lines"] if not line.startswith("TODO:")
                         for w in words_of(line) if w not in STOPWORDS and len(w) > 3)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return {"top": [w for w, _ in ranked[:3]]}
    if fn == "assemble":
        longest = max(inputs["words"], key=inputs["words"].get)
        summary = (f"{inputs['title']}: {len(inputs['outline'])} sections, "
                   f"{inputs['total']} words, longest is '{longest}'; "
                   f"{len(inputs['todo'])} open items; "
                   f"mostly about {', '.join(inputs['keywords'])}.")
        return {"summary": summary, "open_items": [t["item"] for t in inputs["todo"]]}
    raise ValueError(f"unknown fn {fn!r}")


def main() -> None:
    backend = rfx.Backend(executor=execute)
    wf = rfx.Workflow.from_yaml(SPEC, backend, inputs={"text": DOCUMENT})
    widths: list[int] = []
    result = wf.run(on_progress=lambda w: widths.append(w.progress["in_progress"]))
    print(f"steps per round: {widths}")
    print("outline:")
    for heading in wf.record.steps["outline"].output["headings"]:
        print(f"  {heading}")
    print("words per section:")
    for heading, count in wf.record.steps["word_counts"].output["per_section"].items():
        print(f"  {heading:<14} {count}")
    print(f"summary: {result.outcome['summary']}")
    print(f"result: {type(result).__name__}")
    print(f"outcome: {json.dumps(result.outcome, sort_keys=True)}")


if __name__ == "__main__":
    main()
