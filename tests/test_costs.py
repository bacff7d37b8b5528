"""The cost ledger and the spending cap (judgeflow.models.ledger; models.<name>.price, budget) against
the local fault server (tests/fault_server.py), which counts the answers it is paid for and the tokens
it bills: the ledger matches the server; the cap stops before the call that could cross it and pays
nothing more; a rerun with a higher cap pays only for the rest (never a call twice) and gives the same
answers as a run without a cap; a Batch API call is billed at the batch share."""
from __future__ import annotations

import json

import pytest

from judgeflow.errors import BudgetReached, ConfigError
from judgeflow.models import GenRequest, Sampling, ledger as jl
from judgeflow.models.openai_api import OpenAIModel
from judgeflow.report import costs_card
from judgeflow.workflow import settings as st

from fault_server import FaultServer
from project import tiny_config

S = Sampling(max_new_tokens=32, temperature=0.0)
RATE = jl.Rate(input=2.0, output=8.0)  # GPT-4.1's list price per million tokens


def _reqs(n: int) -> list[GenRequest]:
    return [GenRequest.chat(f"Is question {i} answerable? " + "Some context. " * (i % 5), sampling=S, seed=i)
            for i in range(n)]


def _ledger(tmp_path, max_cost=None, rule="clean_questions", rule_cap=None) -> jl.Ledger:
    return jl.Ledger.open(tmp_path / "logs" / "costs.jsonl", rule, {}, {"m": RATE}, max_cost, rule_cap)


def _model(url: str, tmp_path, concurrency: int = 1) -> OpenAIModel:
    # one cache namespace whatever port the server got: a later server answers from the same cache
    return OpenAIModel("m", url, "standin", str(tmp_path / "cache"), max_concurrency=concurrency,
                       cache_namespace="standin")


def test_the_ledger_matches_what_the_server_billed(tmp_path):
    with FaultServer(rate=0.0) as fs, jl.keeping(_ledger(tmp_path)):
        _model(fs.url, tmp_path, concurrency=4).generate(_reqs(12))
        billed, paid = dict(fs.billed), fs.summary()["upstream_calls"]
    lines = jl.read(tmp_path / "logs" / "costs.jsonl")
    assert len(lines) == paid == 12
    assert sum(r["prompt_tokens"] for r in lines) == billed["prompt_tokens"]
    assert sum(r["completion_tokens"] for r in lines) == billed["completion_tokens"]
    cost = (billed["prompt_tokens"] * 2.0 + billed["completion_tokens"] * 8.0) / 1e6
    assert jl.totals(lines)["cost"] == pytest.approx(cost) and jl.totals(lines)["by_rule"] == {
        "clean_questions": pytest.approx(cost)}
    # again: every answer from the cache, nothing paid, the saving written once per model
    with FaultServer(rate=0.0) as fs, jl.keeping(_ledger(tmp_path)):
        _model(fs.url, tmp_path).generate(_reqs(12))
        assert fs.summary()["upstream_calls"] == 0
    t = jl.totals(jl.read(tmp_path / "logs" / "costs.jsonl"))
    assert t["cost"] == pytest.approx(cost) and t["saved"] == pytest.approx(cost)
    assert t["by_model"]["m"]["cache_hits"] == 12 and t["by_model"]["m"]["calls"] == 12
    card = costs_card(str(tmp_path / "logs" / "costs.jsonl"))
    assert f"{cost:.4f}" in card and "clean_questions" in card and "12 cache hits" in card
    assert costs_card(str(tmp_path / "none.jsonl")) == ""


def test_the_cap_stops_before_the_call_that_could_cross_it_and_a_higher_cap_pays_only_the_rest(tmp_path):
    reqs = _reqs(10)
    with FaultServer(rate=0.0) as fs:  # the answers without a cap, and what each costs
        free = _model(fs.url, tmp_path / "free", 1).generate(reqs)
    costs = [RATE.cost(g.prompt_tokens, g.completion_tokens) for g in free]
    bodies = [_model("http://127.0.0.1:9", tmp_path / "x")._body(r) for r in reqs]  # what is sent
    bounds = [jl.worst_cost(RATE, b) for b in bodies]
    assert all(b >= c for b, c in zip(bounds, costs))  # the reservation covers what a call costs
    cap = sum(costs[:4]) + bounds[4] * 0.99  # the 5th call's worst case does not fit
    with FaultServer(rate=0.0) as fs:
        with pytest.raises(BudgetReached, match=r"budget\.max_cost: .* reached: .* spent .* next call to m could "
                                                r"cost up to .* not sent. Every answer paid is cached: raise "
                                                r"budget\.max_cost and rerun"):
            with jl.keeping(_ledger(tmp_path, max_cost=cap)):
                _model(fs.url, tmp_path, 1).generate(reqs)
        assert fs.summary()["upstream_calls"] == 4  # exactly the calls before it
    lines = jl.read(tmp_path / "logs" / "costs.jsonl")
    assert len(lines) == 4 and sum(r["cost"] for r in lines) <= cap
    assert sum(r["cost"] for r in lines) == pytest.approx(sum(costs[:4]))
    # a higher cap: the rest is paid, nothing twice, the same answers as without a cap
    with FaultServer(rate=0.0) as fs, jl.keeping(_ledger(tmp_path, max_cost=1.0)):
        got = _model(fs.url, tmp_path, 1).generate(reqs)
        s = fs.summary()
    assert s["upstream_calls"] == 6 and s["paid_twice"] == 0
    assert [g.text for g in got] == [g.text for g in free] and sum(g.cached for g in got) == 4
    assert jl.totals(jl.read(tmp_path / "logs" / "costs.jsonl"))["cost"] == pytest.approx(sum(costs))


def test_concurrent_calls_reserve_their_worst_case_and_a_rules_own_cap(tmp_path):
    """Eight calls in flight at once: each reserves its worst case before it goes, so what is paid never
    passes the cap; a rule's own cap (budget.stages) stops it while the run's cap is far."""
    reqs = _reqs(16)
    bodies = [_model("http://127.0.0.1:9", tmp_path / "x")._body(r) for r in reqs]
    cap = sum(jl.worst_cost(RATE, b) for b in bodies[:6])
    with FaultServer(rate=0.0, delay_s=0.05) as fs:
        with pytest.raises(BudgetReached, match=r"budget\.stages\.label_oracle: "):
            with jl.keeping(_ledger(tmp_path, max_cost=100.0, rule="label_oracle", rule_cap=cap)):
                _model(fs.url, tmp_path, 8).generate(reqs)
        paid = fs.summary()["upstream_calls"]
    spent = jl.totals(jl.read(tmp_path / "logs" / "costs.jsonl"))["cost"]
    assert 1 <= paid < 16 and spent <= cap and len(jl.read(tmp_path / "logs" / "costs.jsonl")) == paid


def test_a_batch_is_checked_whole_and_billed_at_the_batch_share(tmp_path):
    from judgeflow.models.batch import BatchedModel

    reqs = _reqs(6)
    with FaultServer(rate=0.0) as fs:
        m = _model(fs.url, tmp_path, 2)
        bodies = [m._body(r) for r in reqs]
        whole = sum(jl.worst_cost(RATE, b, batch=True) for b in bodies)
        with pytest.raises(BudgetReached):  # the batch could pass the cap: nothing sent
            with jl.keeping(_ledger(tmp_path, max_cost=whole * 0.9)):
                BatchedModel(m, poll_s=0.01).generate(reqs)
        assert fs.summary()["upstream_calls"] == 0 and not fs.batches
        with jl.keeping(_ledger(tmp_path, max_cost=whole * 1.01)):
            BatchedModel(m, poll_s=0.01).generate(reqs)
        billed = dict(fs.billed)
    lines = jl.read(tmp_path / "logs" / "costs.jsonl")
    assert len(lines) == 6 and all(r["batch"] for r in lines)
    full = (billed["batch_prompt_tokens"] * 2.0 + billed["batch_completion_tokens"] * 8.0) / 1e6
    assert jl.totals(lines)["cost"] == pytest.approx(full * 0.5)


@pytest.mark.parametrize("change, message", [
    ({"budget": {"max_cost": 0}}, r"budget\.max_cost: .*greater than 0"),
    ({"budget": {"stages": {"label_oracle": 0}}}, r"budget\.stages\.label_oracle: a cap of 0"),
    ({"budget": {"stages": {"label_orcale": 1.0}}}, r"budget\.stages\.label_orcale: no rule .*label_oracle"),
    ({"models": {"hosted": {"backend": "openai", "base_url": "https://api.example.com/v1", "model": "x",
                            "price": {"input": -1, "output": 2}}}},
     r"models\.hosted\.price\.input: .*greater than or equal to 0"),
    ({"budget": {"max_cost": 5.0}, "cleaning": {"model": "hosted"},
      "models": {"hosted": {"backend": "openai", "base_url": "https://api.example.com/v1", "model": "x"}}},
     r"models\.hosted\.price: missing, and budget caps the run's spend \(cleaning\.model calls it\)")])
def test_bad_prices_and_caps_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        st.validate(st.deep_merge(tiny_config(), change))


def test_a_served_model_needs_no_price_and_nothing_priced_keeps_no_ledger(tmp_path):
    unpriced = tiny_config()
    del unpriced["models"]["oracle"]["price"]
    cfg = st.validate(st.deep_merge(unpriced, {"budget": {"max_cost": 1.0}}))  # the oracle is served
    assert jl.for_job(dict(cfg), "clean_questions", {}) is not None
    assert jl.for_job(dict(st.validate(unpriced)), "clean_questions", {}) is None
    priced = st.validate(st.deep_merge(tiny_config(), {"models": {"oracle": {"price": {"input": 1, "output": 1}}}}))
    led = jl.for_job(dict(priced), "clean_questions", {"shard": "0"})
    assert led is not None and led.max_cost is None and set(led.rates) == {"oracle"}
    assert str(led.path).endswith(f"{priced['run']}/costs.jsonl")
    (led.path.parent).mkdir(parents=True, exist_ok=True)
    led.path.write_text(json.dumps({"rule": "x", "model": "oracle", "cost": 0.5, "prompt_tokens": 1,
                                    "completion_tokens": 1}) + "\n{torn")
    assert jl.Ledger.open(led.path, "x", {}, {}).spent_before == 0.5  # a torn last line is skipped
