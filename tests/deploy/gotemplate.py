"""A small renderer for the subset of Go templates (text/template plus Helm's functions) that
deploy/helm/nicplug uses, so the chart is tested without a Helm binary (none can be installed
here). It is honest about its reach: anything outside the subset raises `Unsupported` instead
of rendering something Helm would render differently.

The subset:
- actions `{{ pipeline }}`, with `{{-` / `-}}` trimming the whitespace beside them;
- `if` / `else` / `end`, `with` / `else` / `end` (truth as Go's: false, 0, "", nil, empty
  list or map are false);
- pipelines of `.`, `.Field.Path`, string and integer literals, `(...)` sub-pipelines and the
  functions `default`, `quote`, `toYaml`, `nindent`, `indent`, `not`, `and`, `or`;
- Helm's context: `.Values` (defaults deep-merged with overrides), `.Release.Name`,
  `.Release.Namespace`, `.Chart.Name`, `.Chart.Version`, `.Chart.AppVersion`.
A field missing from the values is an error (Helm would print an empty string): the chart's
templates only name fields values.yaml defines.
"""

import json
import re
from pathlib import Path

import yaml


class Unsupported(Exception):
    pass


ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


def tokenize(text):
    """[("text", s) | ("action", s)], trimming applied."""
    out = []
    pos = 0
    for m in ACTION.finditer(text):
        chunk = text[pos:m.start()]
        if m.group(1):
            chunk = chunk.rstrip(" \t\r\n")
        out.append(["text", chunk])
        out.append(["action", m.group(2).strip(), bool(m.group(3))])
        pos = m.end()
    out.append(["text", text[pos:]])
    # Right trim markers eat the whitespace at the start of the next text.
    for i, tok in enumerate(out):
        if tok[0] == "action" and tok[2] and i + 1 < len(out):
            out[i + 1][1] = out[i + 1][1].lstrip(" \t\r\n")
    return [(t[0], t[1]) for t in out]


def parse(tokens):
    """A tree: list of ("text", s) | ("expr", s) | ("if"/"with", cond, body, else_body)."""
    pos = 0

    def block(stop):
        nonlocal pos
        body = []
        while pos < len(tokens):
            kind, value = tokens[pos]
            pos += 1
            if kind == "text":
                if value:
                    body.append(("text", value))
                continue
            word = value.split(None, 1)[0] if value else ""
            if value.startswith("/*"):
                raise Unsupported("template comments")
            if word in ("end", "else"):
                if word not in stop:
                    raise Unsupported(f"unexpected {{{{ {value} }}}}")
                if value != word:
                    raise Unsupported(f"{{{{ {value} }}}}: `else if` and friends")
                return body, word
            if word in ("if", "with"):
                cond = value[len(word):].strip()
                then, ended = block(("end", "else"))
                other = []
                if ended == "else":
                    other, _ = block(("end",))
                body.append((word, cond, then, other))
                continue
            if word in ("range", "define", "template", "block", "include", "tpl", "required"):
                raise Unsupported(f"{{{{ {value} }}}}")
            if re.match(r"^\$\w*\s*:?=", value):
                raise Unsupported(f"variables: {{{{ {value} }}}}")
            body.append(("expr", value))
        if stop:
            raise Unsupported(f"missing {{{{ end }}}} (looking for {stop})")
        return body, None

    tree, _ = block(())
    return tree


def truthy(v):
    return not (v is None or v is False or v == 0 and not isinstance(v, bool) or v in ("",)
                or (isinstance(v, (list, dict)) and not v))


def to_text(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        raise Unsupported("printing a map or list without toYaml")
    return str(v)


def to_yaml(v):
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


def indent(n, s):
    return "\n".join((" " * n + line) if line else line for line in to_text(s).split("\n"))


FUNCS = {
    # Helm: `default DEFAULT VALUE`; the pipeline's value comes last.
    "default": lambda d, v=None: v if truthy(v) else d,
    "quote": lambda v: json.dumps(to_text(v)),
    "toYaml": to_yaml,
    "nindent": lambda n, s: "\n" + indent(int(n), s),
    "indent": lambda n, s: indent(int(n), s),
    "not": lambda v: not truthy(v),
    "and": lambda *a: next((x for x in a if not truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if truthy(x)), a[-1]),
}


def split_top(text, sep):
    """Split on `sep` outside quotes and parentheses."""
    parts, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch == '"':
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if depth == 0 and (ch == sep or (sep == " " and ch in " \t\n")):
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()] if sep == " " else [p.strip() for p in parts]


class Renderer:
    def __init__(self, root, known=None):
        self.root = root
        # The context with the default values: a field found there but not in the merged
        # values was removed by a null override, which Helm reads as nil.
        self.known = known

    def field(self, dot, path):
        value = self.root if path.startswith("$") else dot
        names = [n for n in path.lstrip("$").split(".") if n]
        for i, name in enumerate(names):
            if not isinstance(value, dict) or name not in value:
                if self.removed(dot, path, names[:i + 1]):
                    return None
                raise KeyError(f"no field {path!r} (at {name!r})")
            value = value[name]
        return value

    def removed(self, dot, path, names):
        if self.known is None or not (dot is self.root or path.startswith("$")):
            return False
        value = self.known
        for name in names:
            if not isinstance(value, dict) or name not in value:
                return False
            value = value[name]
        return True

    def term(self, dot, t):
        if t.startswith("(") and t.endswith(")"):
            return self.pipeline(dot, t[1:-1])
        if t.startswith('"'):
            return json.loads(t)
        if re.fullmatch(r"-?\d+", t):
            return int(t)
        if t in ("true", "false"):
            return t == "true"
        if t == "nil":
            return None
        if t == "." or t.startswith(".") or t.startswith("$"):
            return self.field(dot, t)
        raise Unsupported(f"term {t!r}")

    def command(self, dot, cmd, piped):
        words = split_top(cmd, " ")
        if words[0] in FUNCS:
            args = [self.term(dot, w) for w in words[1:]]
            if piped is not _NONE:
                args.append(piped)
            return FUNCS[words[0]](*args)
        if re.fullmatch(r"[a-zA-Z]\w*", words[0]) and words[0] not in ("true", "false", "nil"):
            raise Unsupported(f"function {words[0]!r}")
        if len(words) != 1 or piped is not _NONE:
            raise Unsupported(f"command {cmd!r}")
        return self.term(dot, words[0])

    def pipeline(self, dot, text):
        value = _NONE
        for cmd in split_top(text, "|"):
            value = self.command(dot, cmd, value)
        return value

    def render(self, tree, dot):
        out = []
        for node in tree:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "expr":
                out.append(to_text(self.pipeline(dot, node[1])))
            else:
                kind, cond, then, other = node
                value = self.pipeline(dot, cond)
                if truthy(value):
                    out.append(self.render(then, value if kind == "with" else dot))
                else:
                    out.append(self.render(other, dot))
        return "".join(out)


_NONE = object()


def merge(base, over):
    """Helm's values merge: maps merge key by key (a null removes the key), anything else
    replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(base.get(k), v)
        return out
    return over


def render_text(text, context, known=None):
    return Renderer(context, known).render(parse(tokenize(text)), context)


def render_chart(chart_dir, values=None, name="nicplug", namespace="kube-system"):
    """{template file name: rendered text} for every templates/*.yaml (files starting with `_`
    are skipped, as Helm does)."""
    chart_dir = Path(chart_dir)
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text())
    context = {
        "Values": merge(defaults, values or {}),
        "Release": {"Name": name, "Namespace": namespace},
        "Chart": {"Name": chart["name"], "Version": chart["version"],
                  "AppVersion": chart.get("appVersion", "")},
    }
    known = dict(context, Values=defaults)
    return {p.name: render_text(p.read_text(), context, known)
            for p in sorted((chart_dir / "templates").glob("*.yaml"))
            if not p.name.startswith("_")}


def documents(rendered):
    """Every non-empty YAML document of the rendered templates, parsed."""
    docs = []
    for text in rendered.values():
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs
