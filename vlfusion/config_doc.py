"""Writes the config field reference (docs/config.md) from the declarations in `config_fields`.

  python -m vlfusion.config_doc > docs/config.md

tests/test_config_fields.py regenerates it and fails when the checked-in file differs.
"""

from __future__ import annotations

from vlfusion import config_fields

HEADER = """# Config fields

Every field of `configuration.base_config()`, with its type, default and meaning, generated from the
declarations in `vlfusion/config_fields.py` (do not edit by hand; regenerate with
`python -m vlfusion.config_doc > docs/config.md`). A config file changes these defaults; a run changes
them again with `--config.<field>=<value>`. *resume*: a resumed run may change the field; *not
structural*: a run started from another's parameters may set it differently (`config.init`).
"""


def markdown_cell(text: str) -> str:
  """`text` safe inside a Markdown table cell."""
  return text.replace("|", "\\|").replace("<", "\\<")


def render(fields: dict[str, config_fields.Field] | None = None) -> str:
  """docs/config.md's text: one table per top-level section, fields in declaration order."""
  fields = config_fields.FIELDS if fields is None else fields
  sections: dict[str, list[str]] = {}
  for name, field in fields.items():
    notes = [n for n, on in (("resume", field.resumable),
                             ("not structural", name.startswith("model.") and not field.structural)) if on]
    doc = field.doc + (f" *({', '.join(notes)})*" if notes else "")
    kind = field.type.__name__ + (" or None" if field.default is None else "")
    row = f"| `{name}` | {kind} | `{markdown_cell(repr(field.default))}` | {markdown_cell(doc)} |"
    sections.setdefault(name.split(".")[0], []).append(row)
  out = [HEADER]
  for section, rows in sections.items():
    out += [f"## {section}", "", "| field | type | default | meaning |", "|---|---|---|---|", *rows, ""]
  return "\n".join(out)


if __name__ == "__main__":
  print(render(), end="")
