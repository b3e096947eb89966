"""Cost reports: `gather.build_report` calls the planner and the simulator and returns plain
data plus figures; `render` turns them into one self-contained HTML file or Markdown with
PNGs beside it; `write_report` writes either."""
from __future__ import annotations

from pathlib import Path

from planner.outputs import make_dir, write_bytes, write_text
from planner.report.render import Figure, render_html, render_markdown


def write_report(data: dict, figures: list[Figure], output, figures_dir=None) -> list[Path]:
    """Write `output` (.html: figures embedded; .md: figures as PNGs in `<stem>_figures/`
    beside it, or `figures_dir`). Returns the paths written."""
    out = Path(output)
    written = []
    if out.suffix.lower() == ".md" and figures_dir is None:
        figures_dir = out.with_name(out.stem + "_figures")
    if figures_dir is not None:
        d = make_dir(figures_dir)
        for f in figures:
            write_bytes(d / f"{f.key}.png", f.png)
            written.append(d / f"{f.key}.png")
    if out.suffix.lower() == ".md":
        rel = Path(figures_dir).resolve()
        try:
            link = rel.relative_to(out.resolve().parent).as_posix()
        except ValueError:
            link = rel.as_posix()
        write_text(out, render_markdown(data, figures, link))
    else:
        write_text(out, render_html(data, figures))
    return [out] + written


__all__ = ["Figure", "render_html", "render_markdown", "write_report"]
