"""Algorithm 1 of CITING, end to end and resumable.

    output_dir/
      sft/                 lines 2-4   LoRA adapter after supervised fine-tuning (or a given adapter)
      rubric.json          line 5      categories + criteria (teacher-designed, built-in, or given)
      instructions.jsonl   line 6      the curriculum instructions with their matched category/criteria
      round_<k>/           lines 7-11  rollouts.jsonl (r(k)), revisions.jsonl (accepted r(k+1)),
                                       rejected.jsonl, adapter/ (pi(k+1)), train_stats.json (optimizer
                                       steps, rows, tokens: citing_trl/train_stats.py), summary.json
                                       (a round's result: citing_trl/round_result.py)
      final/               the last round's adapter + model card
      teacher_cache.jsonl  every teacher answer ever received (nothing is paid for twice)

Each stage checks for its finished output first, so rerunning the same command resumes: finished stages
and rounds are skipped and an interrupted round continues from what is on disk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

from citing_trl.citing_config import CitingArguments, RolloutArguments, TeacherArguments, check_teacher_sampling
from citing_trl.citing_trainer import CitingTrainer
from citing_trl.distributed import (
    check_engine,
    check_shared_output_dir,
    gathered_for_generation,
    on_main,
    save_adapter,
    whole_model_loading,
)
from citing_trl.errors import ConfigError
from citing_trl.generation import DecodingConfig
from citing_trl.jsonl import read_jsonl, write_jsonl
from citing_trl.memory import MemoryMeter, memory_table, trim_heap
from citing_trl.models import load_model
from citing_trl.revision import gold_answers, student_rollouts, teacher_revisions
from citing_trl.round_result import ROLLOUTS_FILE, NoRevisionsError, RoundResult, read_rollouts
from citing_trl.rubric import Rubric, RubricMatcher, assign_criteria, default_rubric, design_rubric, load_embedder
from citing_trl.rubric.matching import release_embedders
from citing_trl.run_layout import own_file, round_dir
from citing_trl.sft import load_rows, load_student_for_training, run_sft
from citing_trl.teacher import Teacher, TeacherConfig, TeacherError
from citing_trl.train_stats import train_stats, write_train_stats
from citing_trl.verification import per_kept_row, print_round_report

logger = logging.getLogger(__name__)


def free_memory() -> None:
    """Between stages: collect what the stage dropped, hand the CUDA cache back, and ask glibc to return freed
    heap pages to the system (a stage's freed tensors otherwise stay resident under the next stage's peak)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim_heap()


def usage_delta(before: dict, after: dict) -> dict:
    """Teacher usage of one stage: the ledger's counters after it minus before it."""
    out = {}
    for key, value in after.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not key.startswith("price"):
            out[key] = round(value - before.get(key, 0), 6)
    return out


def record_base_model(adapter_dir: str | Path, name_or_path: str) -> None:
    """Adapters record the base model they were trained on; keep the reference the user gave (a Hub id)
    rather than the local folder it was resolved to, so a pushed adapter loads anywhere."""
    path = Path(adapter_dir) / "adapter_config.json"
    if path.exists() and not Path(name_or_path).exists():
        config = json.loads(path.read_text())
        if config.get("base_model_name_or_path") != name_or_path:
            config["base_model_name_or_path"] = name_or_path
            path.write_text(json.dumps(config, indent=2))


def _state():
    from accelerate import PartialState

    return PartialState()


def _stage_args(training_args, output_dir: Path, **overrides):
    return dataclasses.replace(training_args, output_dir=str(output_dir), **overrides)


class CitingPipeline:
    """Runs Algorithm 1 into ``training_args.output_dir``; see the module docstring for the layout.

    ``teacher_config`` (a :class:`~citing_trl.teacher.TeacherConfig`) and ``rollout_config`` (the student's
    :class:`~citing_trl.generation.DecodingConfig`) default to the recipe's defaults (``--teacher_*``,
    ``--rollout_*``)."""

    def __init__(self, data_args, training_args, model_args, citing_args: CitingArguments,
                 teacher_config: TeacherConfig | None = None, rollout_config: DecodingConfig | None = None):
        self.data_args, self.training_args, self.model_args, self.args = data_args, training_args, model_args, citing_args
        self.teacher_config = teacher_config if teacher_config is not None else TeacherArguments().build()
        self.rollout_config = rollout_config if rollout_config is not None else RolloutArguments().build()
        check_teacher_sampling(citing_args, self.teacher_config)
        self.revision = citing_args.revision_settings()  # the revision filter, handed down whole each round
        self.out = Path(training_args.output_dir)
        self.state = _state()
        self._teacher = None
        self.timings: dict[str, float] = {}
        self.memory = MemoryMeter()  # peak memory per stage, recorded under the names of self.timings (less "_s")

    # -- helpers -----------------------------------------------------------------------------------
    @property
    def teacher(self):
        if self._teacher is None:

            self._teacher = Teacher(self.teacher_config, cache_path=self.out / "teacher_cache.jsonl")
        return self._teacher

    def _main_first(self, fn, done_marker: Path):
        """Run ``fn`` on the main process only; every rank waits for it and then sees its output. A user error
        in ``fn`` stops every rank (rank 0 reports it; see :func:`citing_trl.distributed.on_main`)."""
        on_main(fn, self.state, skip=done_marker.exists())

    # -- before anything expensive: does the teacher answer? ------------------------------------------
    def teacher_needed(self) -> bool:
        """A stage still to run will call the teacher (rubric design, or a round without its revisions)."""
        if self.args.rubric == "design" and not (self.out / "rubric.json").exists():
            return True
        return any(not (round_dir(self.out, k) / "revisions.jsonl").exists() for k in range(self.args.num_rounds))

    def preflight(self) -> None:
        """Check the teacher before SFT when a later stage needs it, so a wrong URL or model fails in seconds,
        not after hours of training (:meth:`~citing_trl.teacher.Teacher.preflight`: the backend's own check, or
        one tiny cached request). The main process checks; a failure stops every rank."""
        on_main(self._check_teacher, self.state, skip=not self.teacher_needed())

    def _check_teacher(self) -> None:
        config = self.teacher_config
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            Teacher.preflight(config, cache_path=self.out / "teacher_cache.jsonl")
        except TeacherError as err:
            raise TeacherError(
                f"--teacher_base_url {config.base_url or '(OpenAI API)'} --teacher_model {config.model!r}: "
                f"the teacher did not answer a test request, so nothing was trained ({err.reason or err}); "
                "start the server or fix the flags", reason=err.reason,
            ) from err
        logger.info("teacher check passed (%s backend, %s)", config.backend, config.model)

    # -- lines 2-4: SFT ----------------------------------------------------------------------------
    def sft(self) -> Path:
        if self.args.sft_adapter:
            return Path(self.args.sft_adapter)
        target = self.out / "sft"
        if (target / "adapter_config.json").exists():
            logger.info("SFT adapter found at %s; skipping SFT", target)
            return target

        t0 = time.time()
        extra = {}
        if self.args.sft_num_train_epochs is not None:
            extra["num_train_epochs"] = self.args.sft_num_train_epochs
        with self.memory.stage("sft"):
            trainer = run_sft(self.data_args, _stage_args(self.training_args, target, **extra), self.model_args)
            del trainer
            free_memory()
        record_base_model(target, self.model_args.model_name_or_path)
        self.timings["sft_s"] = time.time() - t0
        return target

    # -- line 5: rubric ----------------------------------------------------------------------------
    def rubric(self):
        path = self.out / "rubric.json"

        def make():
            with self.memory.stage("rubric"):
                make_rubric()
                if self._teacher is not None:
                    self._teacher.release_model()  # a local teacher is not needed again before the revisions
                    free_memory()

        def make_rubric():
            t0 = time.time()
            choice = self.args.rubric
            if choice == "default":
                rubric = default_rubric()
            elif choice == "design":
                rows = self.train_rows()
                rubric = design_rubric(
                    [r["instruction"] for r in rows], self.teacher, sample_size=self.args.rubric_sample_size,
                    batch_size=self.args.rubric_batch_size, max_categories=self.args.max_categories,
                    seed=self.data_args.dataset_seed,
                )
                self.teacher.ledger.print(title="Teacher usage: rubric design")
            else:
                rubric = Rubric.load(choice)
            self.out.mkdir(parents=True, exist_ok=True)
            rubric.save(path)
            self.timings["rubric_s"] = time.time() - t0

        self._main_first(make, path)
        return Rubric.load(path)

    # -- line 6: matching ----------------------------------------------------------------------------
    def train_rows(self) -> list[dict]:
        """The curriculum's instructions; an empty curriculum is refused (every rank computes the same)."""
        rows = load_rows(self.data_args)
        if len(rows) == 0:
            d = self.data_args
            raise ConfigError(
                f"the curriculum is empty: --dataset {d.dataset!r} --dataset_split {d.dataset_split} has no rows; "
                "choose another --dataset or --dataset_split", flag="dataset")
        if self.args.num_instructions and len(rows) > self.args.num_instructions:
            rows = rows.shuffle(seed=self.data_args.dataset_seed).select(range(self.args.num_instructions))
        return rows

    def matched_instructions(self, rubric) -> list[dict]:
        path = self.out / "instructions.jsonl"

        def make():

            t0 = time.time()
            with self.memory.stage("matching"):
                matcher = RubricMatcher(rubric, load_embedder(self.args.embedding_model))
                matched = assign_criteria(self.train_rows(), matcher)
                write_jsonl(path, matched.to_list())
                del matcher
                release_embedders()  # the encoder is not needed again in this run
                free_memory()
            self.timings["matching_s"] = time.time() - t0

        self._main_first(make, path)
        return read_jsonl(path)

    # -- lines 7-11: curriculum rounds ---------------------------------------------------------------
    def round(self, k: int, adapter: Path, rows: list[dict], rubric, previous: dict[str, str] | None) -> RoundResult:
        """Round k: the student pi(k) answers (line 8), the teacher revises and the gate checks (line 9), the
        student learns (line 10). Returns the round's result; a finished round is read from disk, not rerun."""
        rdir = round_dir(self.out, k)
        summary_path = rdir / "summary.json"
        if summary_path.exists():
            logger.info("round %d already finished; skipping", k)
            return RoundResult.load(rdir, k)
        rdir.mkdir(parents=True, exist_ok=True)
        if self.state.is_main_process and (self.out / "final").exists():
            shutil.rmtree(self.out / "final")  # a round is (re)running: the old final adapter is stale
        timings: dict[str, float] = {}

        t0 = time.time()
        with self.memory.stage(f"round_{k}_rollouts"):
            responses = self._rollouts(k, adapter, rows, previous, rdir)
        timings["rollouts_s"] = time.time() - t0
        with whole_model_loading():  # a local teacher or a reward gate loads on the main process only
            result = self._revisions(k, rows, responses, rdir, timings)

        # line 10: fine-tune pi(k) on pr(x, c, r(k)) -> r(k+1) (Eq. 4)
        t2 = time.time()
        with self.memory.stage(f"round_{k}_training"):
            trainer = self._train_round(k, adapter, result, rubric, rdir)
            timings["training_s"] = time.time() - t2
            result.train_loss = trainer.state.log_history[-1].get("train_loss")
            result.adapter = rdir / "adapter"
            del trainer
            free_memory()
        if self.state.is_main_process:
            summary = result.summary(instructions=len(rows), teacher_model=self.teacher_config.model,
                                     revision_settings=self.revision_settings(rows), timings=timings)
            summary_path.write_text(json.dumps(summary, indent=2))
            self.timings.update({f"round_{k}_{name}": value for name, value in timings.items()})
        self.state.wait_for_everyone()
        return result

    def _rollout_config(self, k: int) -> DecodingConfig:
        """The student's decoding settings for round k: the --rollout_* settings, seeded per round."""
        return dataclasses.replace(self.rollout_config, seed=self.training_args.seed + k,
                                   show_progress=self.state.is_main_process)

    def _rollouts(self, k: int, adapter: Path, rows: list[dict], previous: dict[str, str] | None,
                  rdir: Path) -> dict[str, str]:
        """Line 8: the student pi(k) writes r(k); every rank generates its share into its own file (appended
        batch by batch, so a killed run resumes). Returns r(k) of every row."""
        state = self.state
        model, tokenizer = load_model(self.model_args.model_name_or_path, adapter=str(adapter),
                                      dtype=self.model_args.dtype, device=str(state.device))
        use_previous = previous if (k > 0 and self.args.rollout_mode == "revise") else None
        shard = own_file(rdir / ROLLOUTS_FILE, state.process_index, state.num_processes)
        on_disk = read_rollouts(rdir, full=True)  # any shard layout: a resume with another process count
        with gathered_for_generation(model):  # ZeRO-3 loads it partitioned: every rank gathers it whole
            mine = student_rollouts(model, tokenizer, rows, shard, self._rollout_config(k), previous=use_previous,
                                    rank=state.process_index, world_size=state.num_processes,
                                    desc=f"round {k}: student answers r({k})", done=on_disk,
                                    prompt_style=self.args.revision_prompt)
        del model
        free_memory()
        state.wait_for_everyone()
        if state.num_processes > 1:
            return read_rollouts(rdir)  # the other ranks' shares are in their files
        return {i: rec["response"] for i, rec in mine.items()}

    def _revisions(self, k: int, rows: list[dict], responses: dict[str, str], rdir: Path,
                   timings: dict[str, float]) -> RoundResult:
        """Line 9: the teacher revises r(k) -> r(k+1) and the gate checks each revision (main process; the
        teacher's cache makes a rerun free). Other processes, and a run resuming after this stage, read the
        result from disk."""
        result: RoundResult | None = None

        def revise():
            with self.memory.stage(f"round_{k}_revisions"):
                try:
                    revise_rows()
                finally:  # a local teacher's weights would otherwise stay resident through training
                    self.teacher.release_model()
                    free_memory()

        def revise_rows():
            nonlocal result
            t1 = time.time()
            missing = [r["id"] for r in rows if r["id"] not in responses]
            if missing:
                raise RuntimeError(f"round {k}: no student answer on disk for ids {missing[:5]}")
            before = self.teacher.ledger.summary()
            selection = teacher_revisions(
                self.teacher, rows, responses, self.revision, desc=f"round {k}: teacher revisions",
                seed=self.training_args.seed + k, prompt_style=self.args.revision_prompt,
            )
            usage = usage_delta(before, self.teacher.ledger.summary())
            usage.update(per_kept_row(usage, len(selection.accepted)))
            result = RoundResult(
                k, responses, accepted=[{**r, "round": k} for r in selection.accepted], rejected=selection.rejected,
                counts=selection.counts, usage=usage, verification=self._verification(selection.report),
            )
            result.save(rdir)  # revisions.jsonl, the stage's done marker, last
            print_round_report(k, selection.report, usage)
            self.teacher.ledger.print(title=f"Teacher usage after round {k}")
            if not result.accepted:  # nothing is marked done: a rerun with other settings asks again (cache permitting)
                raise NoRevisionsError(
                    f"round {k}: the teacher produced no usable revision {result.counts}; "
                    f"{self._no_revision_hint(result.counts)}; see {rdir / 'rejected.jsonl'}"
                )
            timings["revisions_s"] = time.time() - t1

        self._main_first(revise, rdir / "revisions.jsonl")
        return result if result is not None else RoundResult.load(rdir, k)

    def _no_revision_hint(self, counts: dict) -> str:
        """The setting to change when a round kept no revision, from the commonest rejection reason."""
        a, t = self.revision, self.teacher_config
        reason = max(counts, key=counts.get) if counts else ""
        if reason == "truncated":
            return (f"revisions hit the token cap: raise --teacher_max_tokens (now {t.max_tokens}) or set "
                    "--keep_complete_truncated true or --reject_truncated false")
        if reason == "identical":
            return "the teacher returned the drafts unchanged: set --keep_identical true or use another --teacher_model"
        if reason in ("empty", "echoes_prompt"):
            return f"the teacher's answers were {reason.replace('_', ' ')}: use another --teacher_model"
        return (f"the revision gate rejected them: use another --revision_gate (now {a.revision_gate}) or lower "
                f"--gate_margin (now {a.gate_margin})")

    def _verification(self, report: dict) -> dict:
        """What decided the round's training rows, for summary.json and the model card: the revision settings
        (written from the object), the teacher's temperature, the ungated rows and the fix/break counts."""
        return {**dataclasses.asdict(self.revision), "teacher_temperature": self.teacher_config.temperature,
                "ungated_rows": report["ungated"], "fix_break": report["fix_break"]}

    def revision_settings(self, rows: list[dict] | None = None) -> dict:
        """How this run's revisions were made and filtered: the revision settings (from the object), the revision
        prompt and the teacher's and the student's repetition controls. The round summary and the model card
        record it."""
        decoding = ("repetition_penalty", "no_repeat_ngram_size")
        out = {**dataclasses.asdict(self.revision), "revision_prompt": self.args.revision_prompt,
               **{f"teacher_{name}": getattr(self.teacher_config, name) for name in decoding},
               **{f"rollout_{name}": getattr(self.rollout_config, name) for name in decoding}}
        if rows is not None and self.revision.revision_reference:
            out["reference_guided_rows"] = sum(1 for r in rows if gold_answers(r))
        return out

    def _train_round(self, k: int, adapter: Path, result: RoundResult, rubric, rdir: Path):
        from datasets import Dataset


        model, tokenizer, _ = load_student_for_training(self.model_args, adapter=str(adapter))
        replay = load_rows(self.data_args) if self.training_args.replay_fraction > 0 else None
        args = _stage_args(self.training_args, rdir / "adapter")
        trainer = CitingTrainer(
            model=model, args=args, revision_dataset=Dataset.from_list(result.accepted), replay_dataset=replay,
            processing_class=tokenizer, rubric_categories=[c.name for c in rubric.categories], round_index=k,
            num_rounds=self.args.num_rounds, teacher_model=self.teacher_config.model,
            verification=result.verification,
            revision_settings=self.revision_settings(), revision_prompt=self.args.revision_prompt,
        )
        check_engine(trainer.accelerator)
        trainer.train()
        stats = train_stats(trainer, revision_rows=len(result.accepted),
                            replayed_rows=trainer.citing_info["replayed_rows"])  # every rank: tokens are summed
        save_adapter(trainer, args.output_dir)
        if self.state.is_main_process:  # steps, rows, tokens: what the compute-matched control sft_more matches
            write_train_stats(rdir, stats)
        trainer.create_model_card(model_name=f"{self.out.name}-round{k}")
        record_base_model(args.output_dir, self.model_args.model_name_or_path)
        return trainer

    def _save_memory(self) -> None:
        """Print this run's peak memory per stage beside its stage times; merge it into memory.json."""
        summary = self.memory.summary()
        print(memory_table(summary["stages"], self.timings, summary["process_peak_rss_bytes"]))
        path = self.out / "memory.json"
        recorded = json.loads(path.read_text()) if path.exists() else {"stages": {}}
        recorded["stages"].update(summary["stages"])  # a resumed run adds the stages it ran
        recorded["rss_method"] = summary["rss_method"]
        recorded["last_run_peak_rss_bytes"] = summary["process_peak_rss_bytes"]  # start-up included
        path.write_text(json.dumps(recorded, indent=2))

    # -- everything ------------------------------------------------------------------------------------
    def run(self) -> Path:
        t0 = time.time()

        check_shared_output_dir(self.out)  # ranks exchange work through output_dir: on several nodes it must be shared
        if not (self.out / "instructions.jsonl").exists():
            self.train_rows()  # an empty curriculum fails here, on every rank, before SFT
        self.preflight()
        adapter = self.sft()
        with whole_model_loading():  # the encoder (and a designing teacher) load on the main process only
            rubric = self.rubric()
            rows = self.matched_instructions(rubric)
        previous = None
        for k in range(self.args.num_rounds):
            result = self.round(k, adapter, rows, rubric, previous)
            adapter, previous = result.adapter, result.responses
        final = self.out / "final"
        if self.state.is_main_process and not (final / "adapter_config.json").exists():
            tmp = self.out / "final.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            shutil.copytree(adapter, tmp)
            tmp.rename(final)
        if self.state.is_main_process and self.timings:  # something ran: record it next to earlier runs' figures
            path = self.out / "timings.json"
            recorded = json.loads(path.read_text()) if path.exists() else {}
            recorded.update({**self.timings, "last_run_total_s": time.time() - t0})
            path.write_text(json.dumps(recorded, indent=2))
            self._save_memory()
        if self.state.is_main_process and self._teacher is not None:
            self._teacher.ledger.save(self.out / "teacher_usage.json")
        self.state.wait_for_everyone()
        return final
