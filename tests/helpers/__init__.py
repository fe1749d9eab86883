"""Test helpers that are not tests: loopback fakes of an OpenAI-compatible server (``fault_server``: injected
429/500/garbage/latency; ``batch_server``: the files and batches endpoints; ``oracle_server``: a teacher that always
answers with the gold answer) and ``score_self_revision`` (scores r(0)..r(M) of an answers file). Import them as
``tests.helpers.<name>`` from the repository root."""
