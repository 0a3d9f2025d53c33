"""The studio's look: local system fonts only (no font or asset request leaves the studio's address)."""

from __future__ import annotations

SYSTEM_FONTS = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]


def theme():
    import gradio as gr

    return gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", font=SYSTEM_FONTS, font_mono=MONO_FONTS)


CSS = """
.ts-header h1 { margin-bottom: 0.1em; }
.ts-header p { color: var(--body-text-color-subdued); margin-top: 0; }
.ts-error { border-left: 4px solid #dc2626; background: #fef2f2; color: #7f1d1d; padding: 0.6em 0.9em;
            border-radius: 6px; }
.ts-ok { border-left: 4px solid #16a34a; background: #f0fdf4; color: #14532d; padding: 0.6em 0.9em;
         border-radius: 6px; }
.ts-progress { width: 100%; background: var(--neutral-200); border-radius: 6px; height: 14px; overflow: hidden; }
.ts-progress > div { height: 100%; background: var(--color-accent); transition: width 0.5s; }
.ts-stats { display: flex; gap: 1.5em; flex-wrap: wrap; margin-top: 0.4em; font-variant-numeric: tabular-nums; }
.ts-status { font-weight: 600; padding: 0.1em 0.6em; border-radius: 999px; background: var(--neutral-200); }
.ts-status.running { background: #dbeafe; color: #1e3a8a; }
.ts-status.succeeded { background: #dcfce7; color: #14532d; }
.ts-status.failed { background: #fee2e2; color: #7f1d1d; }
.ts-status.cancelled, .ts-status.cancelling { background: #fef3c7; color: #78350f; }
footer { display: none !important; }
"""
