"""One config per concern, parsed directly.

A settings dataclass such as :class:`~citing_trl.teacher.TeacherConfig` or
:class:`~citing_trl.generation.DecodingConfig` declares each field once, under its plain name. A recipe that
needs it on its command line hands a *prefixed view* of it to ``TrlParser``::

    TeacherArguments = prefixed(TeacherConfig, "teacher_")     # --teacher_model, --teacher_max_tokens, ...
    parser = TrlParser((DataArguments, CitingConfig, ModelConfig, CitingArguments, TeacherArguments))
    ..., teacher_args = parser.parse_args_and_config()
    teacher_config = teacher_args.build()                      # a TeacherConfig

The view copies the declarations (type, default, help) of the base class, so nothing is declared twice and no
translator is written by hand. Validation stays in the base class: the view builds the base instance when it
is parsed, so a bad value fails at parse time, and a :class:`~citing_trl.errors.ConfigError` raised for a field
is re-worded to name the prefixed flag (``--teacher_max_tokens``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import MISSING
from typing import Any

from citing_trl.errors import ConfigError


def prefixed(base: type, prefix: str, *, name: str | None = None, only: tuple[str, ...] | None = None,
             defaults: dict[str, Any] | None = None, helps: dict[str, str] | None = None,
             doc: str | None = None) -> type:
    """A dataclass exposing the init fields of ``base`` as ``prefix + field``.

    ``only`` keeps a subset of the fields (the others keep the base class's defaults); ``defaults`` changes a
    default for this view (the judge's temperature, say) and ``helps`` a help text (a choice only this recipe
    adds), without declaring the field again. The view's ``build(**overrides)`` returns a ``base`` instance;
    ``fields_of(view)`` lists the base names it carries."""
    defaults, helps = dict(defaults or {}), dict(helps or {})
    base_fields = [f for f in dataclasses.fields(base) if f.init and (only is None or f.name in only)]
    carried = {f.name for f in base_fields}
    unknown = (set(defaults) | set(helps)) - carried | set(only or ()) - {f.name for f in dataclasses.fields(base)}
    if unknown:
        raise TypeError(f"prefixed({base.__name__}): no such field(s) {sorted(unknown)}")
    names = tuple(f.name for f in base_fields)
    # every flag of this view the message names (``--mode ... needs --backend openai``), longest name first
    own_flags = re.compile(r"--(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")\b")
    specs = []
    for f in base_fields:
        metadata = {**f.metadata, "help": helps[f.name]} if f.name in helps else f.metadata
        kwargs: dict[str, Any] = {"metadata": metadata}
        if f.name in defaults:
            value = defaults[f.name]
            if isinstance(value, (list, dict, set)):
                kwargs["default_factory"] = lambda value=value: type(value)(value)
            else:
                kwargs["default"] = value
        elif f.default is not MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not MISSING:
            kwargs["default_factory"] = f.default_factory
        specs.append((prefix + f.name, f.type, dataclasses.field(**kwargs)))

    def build(self, **overrides):
        values = {n: getattr(self, prefix + n) for n in names}
        values.update(overrides)
        try:
            return base(**values)
        except ConfigError as err:
            if err.flag is None or err.flag not in names:
                raise
            message = own_flags.sub(lambda m: f"--{prefix}{m.group(1)}", str(err))
            raise ConfigError(message, flag=prefix + err.flag) from None

    def __post_init__(self):
        self.build()  # validate at parse time, with the base class's own rules

    cls_name = name or f"{base.__name__}{prefix.strip('_').title().replace('_', '')}View"
    cls = dataclasses.make_dataclass(
        cls_name, specs, namespace={"build": build, "__post_init__": __post_init__, "_base": base,
                                    "_prefix": prefix, "_names": names})
    # type hints are resolved in the base class's module (string annotations under `from __future__ import ...`)
    cls.__module__ = base.__module__
    cls.__doc__ = doc or f"{base.__name__} settings as --{prefix}* flags (declared once, in {base.__name__})."
    return cls


def fields_of(view: type) -> tuple[str, ...]:
    """The base-class field names a :func:`prefixed` view carries."""
    return view._names
