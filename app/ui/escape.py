"""Text from data or a person, placed inside a Markdown or HTML component so it shows as written.

Gradio's Markdown renders HTML (its sanitizer keeps ``<img src>`` and ``<a>``), Markdown syntax
(links, images, emphasis), GitHub's bare-URL, ``www.`` and e-mail autolinks and ``$$`` maths; a
component's ``info=`` line is Markdown too, and ``gr.HTML`` is raw HTML. ``html.escape`` alone
stops only the first: a label ``[click](http://…)`` or ``![x](http://…)`` still became a link or
a fetched image. So every value that came from a file, a form or the registry (label values,
column names, run, model and dataset names, error messages that quote them, log lines) goes
through :func:`literal` before it is put into such a component.

The rule is one line: every ASCII punctuation character and line break becomes a numeric character
reference (``[`` → ``&#91;``). A character reference is never Markdown syntax and never opens an
HTML tag, yet the browser shows it as the character itself; letters, digits, spaces and non-ASCII
text pass unchanged. Without ``:``, ``.`` and ``@`` no autolink can form, without ``$`` no maths,
and without line breaks a value cannot start a heading, list or table of its own.

Not for components that show text as text (``gr.Dataframe`` cells and headers, ``gr.Textbox``,
dropdown choices, ``gr.Label``): there the references would show literally.
"""

from __future__ import annotations

import string

_REFERENCES = {ord(c): f"&#{ord(c)};" for c in string.punctuation + "\n\r"}


def literal(value: object) -> str:
    """``value`` as text that Markdown and HTML show exactly as written, markup and links included."""
    return str(value).translate(_REFERENCES)
