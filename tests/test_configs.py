"""A prefixed view of a settings dataclass: the fields are declared once, parsed under a prefix, validated by the
base class, and errors name the prefixed flag."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import pytest

from citing_trl.configs import fields_of, prefixed
from citing_trl.errors import ConfigError, UserError, check


@dataclass
class Knobs:
    """A stand-in settings class."""

    size: int = field(default=3, metadata={"help": "How many."})
    name: str | None = field(default=None, metadata={"help": "A label."})
    tags: list[str] = field(default_factory=list, metadata={"help": "Tags."})

    def __post_init__(self):
        check(self.size >= 1, "size", "must be >= 1", self.size)


def test_view_declares_prefixed_fields_with_base_help_and_defaults():
    View = prefixed(Knobs, "k_")
    by_name = {f.name: f for f in fields(View)}
    assert set(by_name) == {"k_size", "k_name", "k_tags"}
    assert by_name["k_size"].default == 3 and by_name["k_size"].metadata["help"] == "How many."
    assert fields_of(View) == ("size", "name", "tags")
    built = View(k_size=5, k_name="x").build()
    assert isinstance(built, Knobs) and (built.size, built.name, built.tags) == (5, "x", [])
    assert View().build(size=7).size == 7


def test_view_defaults_and_subset():
    View = prefixed(Knobs, "j_", only=("size",), defaults={"size": 9})
    assert [f.name for f in fields(View)] == ["j_size"]
    assert View().build().size == 9
    with pytest.raises(TypeError, match="no such field"):
        prefixed(Knobs, "j_", defaults={"colour": 1})


def test_view_errors_name_the_prefixed_flag():
    View = prefixed(Knobs, "teacher_")
    with pytest.raises(ConfigError) as err:
        View(teacher_size=0)
    assert str(err.value) == "--teacher_size must be >= 1, got 0"
    assert err.value.flag == "teacher_size" and isinstance(err.value, UserError)


def test_view_parses_with_trl_parser(tmp_path):
    from trl import TrlParser

    from citing_trl.generation import DecodingConfig

    Rollout = prefixed(DecodingConfig, "rollout_")
    yaml = tmp_path / "c.yaml"
    yaml.write_text("k_size: 4\nrollout_max_new_tokens: 32\n")
    parser = TrlParser((prefixed(Knobs, "k_"), Rollout))
    knobs, rollout = parser.parse_args_and_config(args=["--config", str(yaml), "--rollout_do_sample", "true",
                                                        "--k_tags", "a", "b"])
    assert knobs.build().size == 4 and knobs.k_tags == ["a", "b"]
    gen = rollout.build()
    assert isinstance(gen, DecodingConfig) and gen.max_new_tokens == 32 and gen.do_sample is True


def test_view_renames_every_flag_of_its_own_in_a_message_and_takes_help_overrides():
    @dataclass
    class Pair:
        mode: str = field(default="live", metadata={"help": "Mode."})
        backend: str = field(default="local", metadata={"help": "Backend."})

        def __post_init__(self):
            check(self.mode == "live" or self.backend == "remote", "mode", "'batch' needs --backend remote", self.mode)

    View = prefixed(Pair, "t_", helps={"backend": "Backend, or `none`."})
    with pytest.raises(ConfigError) as err:
        View(t_mode="batch")
    assert str(err.value) == "--t_mode 'batch' needs --t_backend remote, got 'batch'"
    assert {f.name: f.metadata["help"] for f in fields(View)} == {"t_mode": "Mode.", "t_backend": "Backend, or `none`."}
    only_mode = prefixed(Pair, "u_", only=("mode",))  # a flag the view does not carry keeps its base name
    with pytest.raises(ConfigError, match="--u_mode 'batch' needs --backend remote"):
        only_mode(u_mode="batch")
    with pytest.raises(TypeError, match="no such field"):
        prefixed(Pair, "v_", only=("mode",), helps={"backend": "x"})
