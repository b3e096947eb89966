"""Cost reports: `gather.build_report` calls the planner and the simulator and returns plain
data plus figures; `render` turns them into one self-contained HTML file or Markdown with
PNGs beside it; `write_report` writes either."""
from __future__ import annotations

from pathlib import Path

from planner.report.render import Figure, render_html, render_markdown


def write_report(data: dict, figures: list[Figure], output, figures_dir=None) -> list[Path]:
    """Write `output` (.html: figures embedded; .md: figures as PNGs in `<stem>_figures/`
    beside it, or `figures_dir`). Returns the paths written."""
    out = Path(output)
    written = []
    if out.suffix.lower() == ".md" and figures_dir is None:
        figures_dir = out.with_name(out.stem + "_figures")
    if figures_dir is not None:
        d = Path(figures_dir)
        d.mkdir(parents=True, exist_ok=True)
        for f in figures:
            (d / f"{f.key}.png").write_bytes(f.png)
            written.append(d / f"{f.key}.png")
    if out.suffix.lower() == ".md":
        rel = Path(figures_dir).resolve()
        try:
            link = rel.relative_to(out.resolve().parent).as_posix()
        except ValueError:
            link = rel.as_posix()
        out.write_text(render_markdown(data, figures, link), encoding="utf-8")
    else:
        out.write_text(render_html(data, figures), encoding="utf-8")
    return [out] + written


__all__ = ["Figure", "render_html", "render_markdown", "write_report"]
