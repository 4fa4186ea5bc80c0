"""Staff-authored templates, rendered in a Jinja2 sandbox.

Stored templates are written by staff, not by us, so they are rendered in
`ImmutableSandboxedEnvironment` with plain data only: the run's `EmailContent` turned
into dicts and tuples (never ORM objects, settings or modules). The layers:

* **Names.** A template sees `articles`, `article`, `subject`, `preheader`,
  `list_name`, `sender_name`, `sender`, `web_url`, `sequence` (drip steps), `footer`
  (the mandatory footer, see footer.py), `slot()` and a bounded `range()`; nothing
  else (no `cycler`, `joiner`, `lipsum`, `namespace`,
  `config`, `request`). Attributes and keys starting with `_` are refused, before
  rendering (with the line) and by the sandbox while rendering.
* **Calls.** Only `slot()`, `range()`, macros, `loop.cycle()`/`loop.changed()` and
  read-only string and dict methods may be called; filters are Jinja's own minus
  `attr`, `pprint` and `random`, plus `html_to_text`.
* **Work.** `range()` holds at most 1,000 numbers. Every step of the template (loop
  iterations, calls, filters, operators, `~`, attribute and item lookups) is charged
  to one budget of 100,000 steps and 2 seconds per email, checked at each step, so
  the deadline holds while rendering, not only after. Operations that multiply sizes
  are bounded: integers (`*`, `**`) to 4,096 bits, strings built by `*`, `~`, `%`,
  `center`, `indent`, `format`, `replace`, `join`, `batch` and `slice` to 1,000,000
  characters, and each rendered part is cut off there too.
* **Reach.** When a template is saved (and a campaign's subject set), every branch it
  can reach is rendered within the same budget, `{% if %}`/`{% elif %}`/`{% else %}`
  alike, so a costly branch that the sample emails do not take is refused at save
  rather than found in a run for one list.
* **Structure.** `include`, `import` and `extends` are unavailable: a stored template
  is self-contained.

Every failure is an InvalidInputError naming the part (subject, html, text), the line
when known, and the problem. `render.render_email` renders stored and built-in
templates alike (slots, CSS inlining), so a stored template's Snapshot goes through
the same MIME and per-recipient steps as a built-in one. Residual risk: within these
bounds a template can still allocate some hundred megabytes for a moment; rendering
in a separate process with resource limits would be the next step.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import Context, LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from newsletter.errors import InvalidInputError
from newsletter.rendering.model import ArticleView, EmailContent, TemplateSource
from newsletter.rendering.slots import SlotRecorder
from newsletter.rendering.text import html_to_text

MAX_RANGE = 1000  # numbers one range() may hold
MAX_STEPS = 100_000  # loop iterations plus calls, per email
RENDER_SECONDS = 2.0  # per email (subject, HTML and text together)
MAX_REPEATED_TEXT = 100_000  # characters of "x" * n
MAX_REPEATED_ITEMS = 1000  # items of [x] * n
MAX_TEXT = 1_000_000  # characters of any string a template builds, and of each part
MAX_WIDTH = 1000  # widths and counts given to center, indent, %-formats, batch, slice
MAX_EXPONENT_BITS = 4096  # bits of the result of x ** y, and of x * y for integers

CONTEXT_NAMES = (
    "articles",
    "article",
    "subject",
    "preheader",
    "list_name",
    "sender_name",
    "web_url",
    "sequence",
    "slot",
    "subscriber",
    "sender",
    "footer",
)
_LOOP_GUARD = "_nl_counted_loop"  # the name of our wrapper around every loop's iterable
_CONCAT = "_nl_concat"  # the name of our bounded `~`
_TEMPLATE_FILE = "<template>"  # Jinja's file name for templates compiled from strings
_SAFE_STR_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isdigit",
        "islower",
        "isspace",
        "istitle",
        "isupper",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "title",
        "upper",
    }
)
_SAFE_DICT_METHODS = frozenset({"get", "items", "keys", "values"})
_SAFE_LOOP_METHODS = frozenset({"cycle", "changed"})
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


# --- the work budget ----------------------------------------------------------------------


@dataclass
class _Budget:
    deadline: float
    steps: int = 0

    def charge(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SecurityError(f"the template loops or calls more than {MAX_STEPS:,} times")
        if time.monotonic() > self.deadline:
            raise SecurityError(f"the template took more than {RENDER_SECONDS:g} s to render")


_BUDGET: ContextVar[_Budget | None] = ContextVar("newsletter_template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:
        raise SecurityError("stored templates render only through render_staff_parts")
    return budget


class _CountedLoop:
    """A loop's iterable that charges the budget for every item it yields."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        budget = _budget()
        for item in self._iterable:
            budget.charge()
            yield item

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]  # TypeError is Jinja's cue


def _bounded_range(*args: int) -> range:
    numbers_ = range(*args)
    if len(numbers_) > MAX_RANGE:
        raise SecurityError(f"range() may hold at most {MAX_RANGE:,} numbers")
    return numbers_


# --- bounded operators and filters --------------------------------------------------------


def _check_text_size(value: Any, what: str) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise SecurityError(f"{what} would make a string of more than {MAX_TEXT:,} characters")
    return value


def _check_printf(spec: Any) -> None:
    if not isinstance(spec, str):
        return
    for width, precision in _PRINTF_SPEC.findall(spec):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_WIDTH):
                raise SecurityError(f"%-format widths may be at most {MAX_WIDTH}")


def _check_count(value: Any, what: str) -> None:
    size = len(value) if isinstance(value, str) else value
    if isinstance(size, int) and size > MAX_WIDTH:
        raise SecurityError(f"{what} may be at most {MAX_WIDTH}")


def _repeat_limit(sequence: Any, times: Any) -> None:
    if not isinstance(times, int) or not isinstance(sequence, str | list | tuple):
        return
    limit, unit = (
        (MAX_REPEATED_TEXT, "characters")
        if isinstance(sequence, str)
        else (MAX_REPEATED_ITEMS, "items")
    )
    if len(sequence) * times > limit:
        raise SecurityError(f"repeating with * may make at most {limit:,} {unit}")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        _repeat_limit(left, right)
        _repeat_limit(right, left)
        both_int = isinstance(left, int) and isinstance(right, int)
        if both_int and abs(left).bit_length() + abs(right).bit_length() > MAX_EXPONENT_BITS:
            raise SecurityError(f"x * y may have at most {MAX_EXPONENT_BITS} bits")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left).bit_length() * right > MAX_EXPONENT_BITS:
                raise SecurityError(f"x ** y may have at most {MAX_EXPONENT_BITS} bits")
        elif isinstance(right, numbers.Number) and abs(right) > 1000:  # type: ignore[arg-type]
            raise SecurityError("x ** y may have an exponent of at most 1000")
    elif operator == "%":
        _check_printf(left)


def _bounded_filter(
    name: str, check: Callable[[Mapping[str, Any]], None] | None = None
) -> Callable[..., Any]:
    """Jinja's filter `name` with its arguments checked first and a string result
    checked after; keeps what Jinja passes it (environment, eval context)."""
    original = FILTERS[name]
    signature = inspect.signature(original)

    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            check(bound.arguments)
        return _check_text_size(original(*args, **kwargs), f"the {name} filter")

    return bounded


def _check_replace(arguments: Mapping[str, Any]) -> None:
    s, old, new = (str(arguments[k]) for k in ("s", "old", "new"))
    occurrences = s.count(old) if old else len(s) + 1
    if arguments["count"] is not None:
        occurrences = min(occurrences, max(int(arguments["count"]), 0))
    if len(s) + occurrences * (len(new) - len(old)) > MAX_TEXT:
        raise SecurityError(f"replace would make more than {MAX_TEXT:,} characters")


def _check_sum(arguments: Mapping[str, Any]) -> None:
    if not isinstance(arguments["start"], numbers.Number):
        raise SecurityError("sum adds numbers only")


def _charged(original: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that charges the budget each time it runs."""

    @functools.wraps(original)
    def charged(*args: Any, **kwargs: Any) -> Any:
        _budget().charge()
        return original(*args, **kwargs)

    return charged


def _bounded_concat(*values: Any) -> Any:
    """`a ~ b ~ c`: Jinja's own join (Markup-aware), with the result's size bounded."""
    _budget().charge()
    size = 0
    for value in values:
        if isinstance(value, str):
            size += len(value)
    if size > MAX_TEXT:
        raise SecurityError(f"'~' would make a string of more than {MAX_TEXT:,} characters")
    if any(hasattr(value, "__html__") for value in values):
        return markup_join(values)
    return str_join(values)


def _filters() -> dict[str, Callable[..., Any]]:
    filters = {name: f for name, f in FILTERS.items() if name not in ("attr", "pprint", "random")}
    filters.update(
        center=_bounded_filter("center", lambda a: _check_count(a["width"], "center width")),
        indent=_bounded_filter("indent", lambda a: _check_count(a["width"], "indent width")),
        wordwrap=_bounded_filter("wordwrap", lambda a: _check_count(a["width"], "wrap width")),
        format=_bounded_filter("format", lambda a: _check_printf(a["value"])),
        replace=_bounded_filter("replace", _check_replace),
        join=_bounded_filter("join"),
        batch=_bounded_filter("batch", lambda a: _check_count(a["linecount"], "batch size")),
        slice=_bounded_filter("slice", lambda a: _check_count(a["slices"], "slice count")),
        sum=_bounded_filter("sum", _check_sum),
        html_to_text=html_to_text,
    )
    return {name: _charged(f) for name, f in filters.items()}


# --- the environment ----------------------------------------------------------------------


def _callable_in_templates(obj: Any) -> bool:
    if obj is _bounded_range or obj is _CountedLoop or obj is _bounded_concat:
        return True
    if isinstance(obj, SlotRecorder | Macro | LoopContext):
        return True
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    return (
        (isinstance(owner, str) and name in _SAFE_STR_METHODS)
        or (isinstance(owner, dict) and name in _SAFE_DICT_METHODS)
        or (isinstance(owner, LoopContext) and name in _SAFE_LOOP_METHODS)
    )


class StaffSandbox(ImmutableSandboxedEnvironment):
    """The sandbox stored templates render in (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(
        self, autoescape: bool, undefined: type[jinja2.Undefined] = jinja2.StrictUndefined
    ) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=undefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            cache_size=0,
        )
        self.filters = _filters()
        self.globals = {
            "range": _bounded_range,
            _LOOP_GUARD: _CountedLoop,
            _CONCAT: _bounded_concat,
        }

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().charge()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().charge()
        return super().getitem(obj, argument)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _budget().charge()
        if not _callable_in_templates(obj):
            described = getattr(obj, "__name__", type(obj).__name__)
            raise SecurityError(f"calling {described}() is not allowed in templates")
        for value in (*args, *kwargs.values()):
            _check_text_size(value, "an argument")
        return context.call(obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _budget().charge()
        _check_binop(operator, left, right)
        return _check_text_size(self.binop_table[operator](left, right), f"{operator!r}")


_HTML_SANDBOX = StaffSandbox(autoescape=True)
_TEXT_SANDBOX = StaffSandbox(autoescape=False)
# For rendering every branch at save: missing values are empty, not errors, so a branch
# written for data the samples lack still runs (and is charged).
_HTML_REACH = StaffSandbox(autoescape=True, undefined=jinja2.ChainableUndefined)
_TEXT_REACH = StaffSandbox(autoescape=False, undefined=jinja2.ChainableUndefined)
_ALLOWED_NAMES = frozenset((*CONTEXT_NAMES, "range"))


# --- compiling ----------------------------------------------------------------------------


class TemplateProblem(InvalidInputError):
    """A stored template part that cannot be compiled or rendered; says where and why."""

    def __init__(self, part: str, reason: str, line: int | None = None) -> None:
        where = f"{part}, line {line}" if line else part
        super().__init__(f"{where}: {reason}")
        self.part = part
        self.line = line
        self.reason = reason


def _private(name: object) -> str:
    return f"'{name}' is private (names starting with '_' are refused)"


def _static_problems(tree: nodes.Template) -> Iterator[tuple[str, int]]:
    """What the sandbox would refuse, found before rendering (so even in branches the
    sample content does not take), with the line."""
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        tag = type(node).__name__.lower().replace("fromimport", "from … import")
        yield f"{{% {tag} %}} is not available: a stored template is self-contained", node.lineno
    for attribute in tree.find_all(nodes.Getattr):
        if attribute.attr.startswith("_"):
            yield _private(attribute.attr), attribute.lineno
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and str(item.arg.value).startswith("_"):
            yield _private(item.arg.value), item.lineno
    for used_filter in tree.find_all(nodes.Filter):
        if used_filter.name == "attr":
            yield "the attr filter is not available: write value.name", used_filter.lineno
    known = f"templates can use {', '.join(CONTEXT_NAMES)}, range"
    for name in sorted(meta.find_undeclared_variables(tree) - _ALLOWED_NAMES):
        uses = (n.lineno for n in tree.find_all(nodes.Name) if n.name == name and n.ctx == "load")
        yield f"unknown name '{name}': {known}", next(uses, 0)


class _Metered(NodeTransformer):
    """Every `for` iterates through _CountedLoop, which charges the budget per item, and
    every `~` goes through _bounded_concat, which bounds what it builds."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        guard = nodes.Name(_LOOP_GUARD, "load", lineno=node.lineno)
        node.iter = nodes.Call(guard, [node.iter], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        join = nodes.Name(_CONCAT, "load", lineno=node.lineno)
        return nodes.Call(join, list(node.nodes), [], None, None, lineno=node.lineno)


def _count_loops(tree: nodes.Template) -> nodes.Template:
    metered = _Metered().visit(tree)
    assert isinstance(metered, nodes.Template)
    return metered


def _every_branch(tree: nodes.Template) -> nodes.Template:
    """Each `{% if %}` runs its body, then each `elif` and `else` body in turn."""
    for branch in list(tree.find_all(nodes.If)):
        bodies = [*branch.body]
        for other in branch.elif_:
            bodies.extend(other.body)
        bodies.extend(branch.else_)
        branch.test = nodes.Const(True, lineno=branch.lineno)
        branch.body, branch.elif_, branch.else_ = bodies, [], []
    return tree


@functools.lru_cache(maxsize=32)
def compile_part(source: str, part: str, html: bool, every_branch: bool = False) -> jinja2.Template:
    """One part's source compiled in the sandbox; TemplateProblem when it does not parse
    or uses something the sandbox refuses. `every_branch` compiles the version that
    takes every branch (for the cost check at save)."""
    if every_branch:
        env = _HTML_REACH if html else _TEXT_REACH
    else:
        env = _HTML_SANDBOX if html else _TEXT_SANDBOX
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(part, exc.message or "syntax error", exc.lineno) from exc
    except RecursionError as exc:
        raise TemplateProblem(part, "expressions are nested too deeply", None) from exc
    try:
        problem = next(_static_problems(tree), None)
        if problem is not None:
            raise TemplateProblem(part, *problem)
        if every_branch:
            tree = _every_branch(tree)
        return env.from_string(_count_loops(tree))
    except jinja2.TemplateError as exc:  # e.g. "No filter named 'pprint'."
        line = getattr(exc, "lineno", None)
        raise TemplateProblem(part, exc.message or type(exc).__name__, line) from exc
    except RecursionError as exc:
        raise TemplateProblem(part, "expressions are nested too deeply", None) from exc


def check_parts(template: TemplateSource) -> None:
    """Compile each part (syntax and static rules only; no rendering)."""
    compile_part(template.subject, "subject", html=False)
    compile_part(template.html, "html", html=True)
    compile_part(template.text, "text", html=False)


# --- rendering ----------------------------------------------------------------------------


def _line_of(exc: BaseException) -> int | None:
    line = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render_part(source: str, part: str, html: bool, context: dict[str, Any]) -> str:
    template = compile_part(source, part, html)
    out: list[str] = []
    size = 0
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_TEXT:
                raise SecurityError(f"the output is longer than {MAX_TEXT:,} characters")
            out.append(chunk)
    except TemplateProblem:
        raise
    except InvalidInputError as exc:  # from slot(): unknown key, two fallbacks
        raise TemplateProblem(part, str(exc), _line_of(exc)) from exc
    except jinja2.TemplateError as exc:
        raise TemplateProblem(part, exc.message or type(exc).__name__, _line_of(exc)) from exc
    except RecursionError as exc:
        raise TemplateProblem(part, "macros call themselves too deeply", None) from exc
    except MemoryError as exc:
        raise TemplateProblem(part, "the template needs too much memory", None) from exc
    except Exception as exc:  # the sandbox lets Python errors through; they are staff input
        raise TemplateProblem(part, f"{type(exc).__name__}: {exc}", _line_of(exc)) from exc
    return "".join(out)


def _article(view: ArticleView) -> dict[str, Any]:
    data = asdict(view)
    # Sanitised when imported (nh3), and shown as HTML by the built-in templates too.
    data["body_html"] = Markup(view.body_html)
    return data


def plain_context(content: EmailContent, slot: SlotRecorder) -> dict[str, Any]:
    """What a stored template sees: the content as dicts, tuples and strings."""
    articles = tuple(_article(a) for a in content.articles)
    extra = {
        k: v for k, v in content.extra.items() if isinstance(v, str | int | float | bool | None)
    }
    return {
        **extra,
        "slot": slot,
        "articles": articles,
        "article": articles[0] if articles else None,
        "list_name": content.list_name,
        "sender_name": content.sender_name,
        "web_url": content.web_url,
        "preheader": content.preheader,
        "sender": asdict(content.sender),
    }


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_subject(source: str, context: Mapping[str, Any]) -> str:
    """A campaign's subject (Jinja2 written by staff) rendered in the sandbox, on one
    line, with `context` as `render.render_email` builds it for a built-in template
    (those are ours and trusted; the subject is not). Raises TemplateProblem."""
    token = _BUDGET.set(_Budget(deadline=time.monotonic() + RENDER_SECONDS))
    try:
        return _one_line(_render_part(source, "subject", False, dict(context)))
    finally:
        _BUDGET.reset(token)


@dataclass(frozen=True)
class StaffRender:
    """A stored template's parts as rendered, before CSS inlining."""

    subject: str
    html: str
    text: str


def render_staff_parts(
    template: TemplateSource,
    content: EmailContent,
    slot: SlotRecorder,
    reader: dict[str, Any],
    subject_slot: SlotRecorder | None = None,
    footer: tuple[str, str] = ("", ""),
) -> StaffRender:
    """Render a stored template's subject, HTML and text in the sandbox, within one
    budget; `reader` is the `subscriber` it sees. Subjects call `subject_slot` (their
    slots' fallbacks are their own), the body `slot`; `footer` is the mandatory
    footer's HTML and text, shown where the template writes `{{ footer }}`.

    The campaign's subject (`content.subject`) is rendered first, in the sandbox too;
    a stored template with a subject of its own renders that one, where `subject` is
    the campaign's. A template without text gets the text of its HTML. Raises
    TemplateProblem (an InvalidInputError) naming the part, line and problem.
    """
    context = plain_context(content, subject_slot or slot)
    context["subscriber"] = reader
    token = _BUDGET.set(_Budget(deadline=time.monotonic() + RENDER_SECONDS))
    try:
        subject = _one_line(_render_part(content.subject, "campaign subject", False, context))
        if template.subject.strip():
            context["subject"] = subject
            subject = _one_line(_render_part(template.subject, "subject", False, context))
        context["subject"] = subject
        context["slot"] = slot
        context["footer"] = Markup(footer[0])
        html = _render_part(template.html, "html", True, context)
        if template.text.strip():
            context["footer"] = footer[1]
            text = _render_part(template.text, "text", False, context)
        else:
            text = html_to_text(html)
    finally:
        _BUDGET.reset(token)
    return StaffRender(subject, html, text)


def check_reach(template: TemplateSource, content: EmailContent) -> None:
    """Render every branch the parts can reach (`if`, each `elif` and `else` alike, with
    missing values empty) within one email's budget; TemplateProblem when that breaks
    the budget or a size bound. A branch the samples skip may be the one a run takes
    for some list or reader, so its cost is paid here, at save, not there.

    Other errors are the sample renders' business: a branch written for data the
    samples lack may fail here and is simply not rendered further.
    """
    slot = SlotRecorder()
    context = plain_context(content, slot)
    context["subscriber"] = {"name": "", "email": "", "attributes": {}}
    context["subject"] = content.subject
    context["footer"] = ""
    parts = (
        (content.subject, "campaign subject", False),
        (template.subject, "subject", False),
        (template.html, "html", True),
        (template.text, "text", False),
    )
    token = _BUDGET.set(_Budget(deadline=time.monotonic() + RENDER_SECONDS))
    try:
        for source, part, html in parts:
            if source.strip():
                _render_reach(compile_part(source, part, html, every_branch=True), part, context)
    finally:
        _BUDGET.reset(token)


def _render_reach(template: jinja2.Template, part: str, context: dict[str, Any]) -> None:
    size = 0
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_TEXT:
                raise SecurityError(f"the output is longer than {MAX_TEXT:,} characters")
    except SecurityError as exc:
        reason = f"{exc} (rendering every branch: a run for some list or reader may take it)"
        raise TemplateProblem(part, reason, _line_of(exc)) from exc
    except (RecursionError, MemoryError) as exc:
        raise TemplateProblem(part, "the template needs too much work or memory", None) from exc
    except Exception:  # data the samples lack: the sample renders judge those errors
        return
