"""The openai backend against a real `transformers serve` on 127.0.0.1, and its cache."""
import pytest

from judgeflow.errors import BackendError
from judgeflow.models import GenRequest, Sampling
from judgeflow.models.openai_api import OpenAIModel
from judgeflow.models.serve import free_port, transformers_server

S = Sampling(max_new_tokens=8, temperature=0.0)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with transformers_server("oracle", str(model_dir), log, startup_timeout=240, threads=2) as url:
        yield url


@pytest.mark.slow
def test_calls_are_cached_and_never_paid_twice(server, model_dir, tmp_path):
    reqs = [GenRequest.chat(f"Say the number {i}.", sampling=S, seed=i) for i in range(3)]
    m = OpenAIModel("oracle", server, str(model_dir), str(tmp_path), max_concurrency=2)
    first = m.generate(reqs)
    assert m.calls == 3 and all(not g.cached for g in first)
    assert all(g.completion_tokens > 0 and g.prompt_tokens > 0 for g in first)  # tokens recorded
    m.close()
    again = OpenAIModel("oracle", server, str(model_dir), str(tmp_path))  # a rerun: a new process
    second = again.generate(reqs + [GenRequest.chat("Say the number 3.", sampling=S, seed=3)])
    assert [g.text for g in second[:3]] == [g.text for g in first]
    assert [g.cached for g in second] == [True, True, True, False]
    assert again.calls == 1 and again.stats()["cache_hits"] == 3
    # another sample index of the same prompt is another call
    third = again.generate([GenRequest.chat("Say the number 0.", sampling=S, seed=99)])
    assert not third[0].cached


@pytest.mark.slow
def test_unreachable_endpoint_names_the_url_and_keeps_what_was_paid(server, model_dir, tmp_path):
    ok = OpenAIModel("oracle", server, str(model_dir), str(tmp_path))
    ok.generate([GenRequest.chat("Say yes.", sampling=S)])
    ok.close()
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    dead = OpenAIModel("oracle", url, str(model_dir), str(tmp_path), max_retries=1, timeout=5)
    with pytest.raises(BackendError, match=rf"{url}: cannot connect after 1 retries"):
        dead.generate([GenRequest.chat("Say no.", sampling=S)])
    # the cache is per endpoint+model: the answer paid for on the live server is still on disk
    back = OpenAIModel("oracle", server, str(model_dir), str(tmp_path))
    assert back.generate([GenRequest.chat("Say yes.", sampling=S)])[0].cached


@pytest.mark.slow
def test_server_that_does_not_come_up_gives_a_clear_error(model_dir, tmp_path):
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")  # looks like a model dir, but transformers cannot load it
    with pytest.raises(BackendError, match=r"(exited with code|did not come up).*last lines of"):
        with transformers_server("oracle", str(bad), tmp_path / "s.log", startup_timeout=60):
            pass


@pytest.mark.slow
def test_transformers_serve_gives_no_logprobs_so_verdicts_come_from_the_text(server, model_dir, tmp_path, caplog):
    """The real server ignores the logprobs field (it says so in its own log): the client reads the
    verdicts from the text, says so once, and counts every such answer."""
    import logging

    reqs = [GenRequest.chat(f"Is {i} an even number? Answer with a line 'Verdict: YES' or 'Verdict: NO'.",
                            sampling=S, seed=i, score_after="Verdict:") for i in range(3)]
    m = OpenAIModel("oracle", server, str(model_dir), str(tmp_path))
    with caplog.at_level(logging.WARNING):
        got = m.generate(reqs)
    assert all(g.p_yes is None and g.choice_probs is None for g in got)
    assert m.stats()["logprobs"] == {"none": 3, "refused": False}
    assert sum("returns no logprobs" in r.getMessage() for r in caplog.records) == 1
