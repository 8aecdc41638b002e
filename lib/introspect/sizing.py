"""Resources of every workflow job (host memory, wall time, GPUs, CPU threads), by arithmetic, in one place.

A job's resources are a function of its rule, the registry sizes of the models it loads (``n_params``,
``hidden_size``, ``dtype``, ``train_gpus``), the sizes of its data (tokens, pairs, questions, features: from the
config) and the config's ``compute`` section. :func:`job_resources` computes them; ``rules/common.smk`` gives
each rule's ``resources:`` and ``threads:`` from it, and the SLURM profile's ``set-resources`` can still
override any of them per rule. Nothing here imports snakemake, nor torch at import time (a training job's
lookup, memory.training_jobs, resolves projections with introspect.explainers.model).

The rules:

- **Host memory** (``mem_mb``): one Python process (:data:`PROCESS_BYTES`, plus :data:`CUDA_HOST_BYTES` when the
  job has a GPU), plus the weights of every model it loads, at least in bfloat16 (transformers builds a model on
  the host before it moves to the GPU), plus its data in memory times :data:`DATA_MARGIN`; rounded up to a GB.
- **GPUs** (``gpu``): a job that runs a model (or an SAE) on ``compute.device`` asks for ``compute.gpus.<stage>``
  GPUs, at least one when the device is ``cuda``, and at least enough GPUs of ``compute.gpu_memory_gb`` to hold
  what it puts on them with :data:`GPU_HEADROOM` to spare. Prediction and SelfIE (stage ``train``) run on one
  device: one GPU, not the training ranks. Jobs that compute nothing on a device ask for none (materialise
  asks for what its stage sets).
- **Wall time** (``runtime``, minutes): start-up, reading the weights, downloads, the job's FLOPs at
  :data:`GPU_INFERENCE_FLOPS` (or :data:`CPU_FLOPS_PER_THREAD` per thread), generation steps at one read of the
  weights each, remote API calls; times :data:`RUNTIME_MARGIN`, rounded up to 10 minutes, plus the 10 minutes
  the SLURM profile's SIGTERM comes before the limit (:data:`SIGTERM_LEAD_MINUTES`).
- **Training jobs** launch one rank per GPU (``train_gpus`` of the explainer's registry entry, else
  ``compute.gpus.train``): their memory per GPU and GPU-hours are :mod:`introspect.explainers.memory`'s
  arithmetic, the same numbers as docs/cluster.md's training table; the wall time is GPU-hours / GPUs (plus
  loading and saving) times the margin, and the host holds one bfloat16 copy of the explainer per rank
  (ZeRO-3 partitions the host-built model) and one more on rank 0 for the consolidated save.
- Tables, figures and the small downloads (tokenizers, facts, questions, the corpus) are tiny: one thread, 2 GB,
  no GPU, and ``localrules`` (:data:`LOCAL_RULES`); model weights download in cluster jobs sized by their bytes.

Every number below is an estimate from arithmetic and stated assumptions, not a measurement on a cluster,
unless its comment says it was measured.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from introspect.explainers import memory
from introspect.names import is_selfie, split_scaled

GB = 1e9
MB = 1e6

# --- memory -------------------------------------------------------------------------------------------------
#: bytes per parameter of each registry dtype
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: host memory of one job's Python process with torch, transformers, polars and safetensors imported: 270 MB
#: resident measured here (torch 2.13 CPU build, `ru_maxrss`), rounded up to 1 GB for allocator slack
PROCESS_BYTES = 1.0 * GB
#: extra host memory once CUDA initialises in a process (CUDA context, cuBLAS/cuDNN host state and pinned
#: staging buffers): typically 1-1.5 GB; not measured here (no GPU), the upper end taken
CUDA_HOST_BYTES = 1.5 * GB
#: factor on a job's data in host memory: a table read with polars and turned into numpy / torch holds a second
#: copy of part of it for a while (an assumption, not a measurement)
DATA_MARGIN = 1.5
#: what a GPU must hold beyond the weights (activations of a batch, KV cache, CUDA context, fragmentation):
#: the job asks for GPUs of compute.gpu_memory_gb until weights x (1 + 0.15) fit (docs/cluster.md)
GPU_HEADROOM = 0.15
#: compute.gpu_memory_gb when the config does not set it (an A100/H100 80 GB card)
DEFAULT_GPU_MEMORY_GB = 80.0
#: compute.memory_budget_mb when not set: the chunk a streaming data stage reads at a time (schema default)
DEFAULT_MEMORY_BUDGET_MB = 1024
#: a tiny job's memory floor (downloads, tables): the process plus room for small tables
TINY_BYTES = 2 * GB

# --- time -----------------------------------------------------------------------------------------------------
#: a job's fixed start-up on a node: Snakemake's job step, Python imports, CUDA initialisation (an assumption)
STARTUP_SECONDS = 120
#: reading safetensors from a shared file system into host memory, and writing results back (an assumption:
#: a parallel file system gives one client more; local NVMe ~2 GB/s)
FILE_BYTES_PER_SECOND = 500 * MB
#: sustained download rate from the Hugging Face hub or Neuronpedia's bucket (an assumption)
DOWNLOAD_BYTES_PER_SECOND = 50 * MB
#: forward-only bfloat16 FLOP/s of one GPU: half of memory.gpu_hours' 400 TFLOP/s training assumption (40% of
#: an H100's dense bf16 peak), since inference batches short, padded prompts and launches small kernels
GPU_INFERENCE_FLOPS = 200e12
#: float32 FLOP/s of one GPU for the SAE's matrix products (torch leaves TF32 off for matmuls): about half of
#: an H100 SXM's 67 TFLOP/s fp32 peak
GPU_FP32_FLOPS = 30e12
#: bytes per second one GPU reads its weights at while generating (one read of the weights per new token of a
#: batch): about half of an H100 SXM's 3.35 TB/s HBM3
GPU_WEIGHT_BYTES_PER_SECOND = 1.6e12
#: float32 FLOP/s per CPU thread: a 1024 x 1024 float32 matmul reached 100 GFLOP/s on one thread of this
#: machine's AMD EPYC (measured with torch). Against this module's token counts (upper bounds) the default
#: config's measured jobs (docs/results.md: patching and hint trainings, sweeps, hint runs on 2 cores) ran
#: 2-10x faster than this rate predicts, so CPU runtimes here are upper bounds
CPU_FLOPS_PER_THREAD = 100e9
#: bytes per second a CPU job reads its weights at while generating (one DDR channel's share; an assumption)
CPU_WEIGHT_BYTES_PER_SECOND = 10e9
#: seconds per remote request of an LM judge or simulator (gpt-4.1-mini class, short replies; an assumption),
#: divided by the backend's `concurrency` (default 8, as the OpenAI-compatible client)
API_SECONDS = 2.0
DEFAULT_API_CONCURRENCY = 8
#: runtime margin: estimates are arithmetic, and a job killed at its limit costs a re-run (a training job
#: checkpoints on the SIGTERM before the limit and its retry resumes), while one that ends early costs nothing
RUNTIME_MARGIN = 1.5
#: runtimes are rounded up to this many minutes, and never below it
RUNTIME_STEP_MINUTES = 10
#: added to every runtime: the SLURM profile has SLURM send SIGTERM 10 minutes before a job's time limit
#: (slurm_extra --signal=TERM@600, for training checkpoints), so a job's own time must end before that.
#: Measured: with a 10-minute limit the CI SLURM cancelled a 3-second job at its start
SIGTERM_LEAD_MINUTES = 10

# --- data sizes (config keys where they exist; the rest are stated estimates) --------------------------------
#: features.activations.max_tokens when null (the whole corpus): the builtin corpus has 362,682 SmolLM2 tokens
#: (config.yaml); rounded up to a million for a user's corpus
FALLBACK_TOKENS = 1_000_000
#: hints.questions.n when null with the hub or files backend: MMLU's test split, all 57 subjects
MMLU_TEST_QUESTIONS = 14_042
#: hints.questions.n when null with the builtin generator (its default count)
BUILTIN_QUESTIONS = 1_200
#: tokens of one activation-patching prompt ("{statement}\nRespond with one of {5 options} and nothing else."):
#: ~40 Llama-3 tokens for a CounterFact statement, rounded up (a shared few-shot prefix runs once, from the
#: KV cache, and is not counted)
PATCH_PROMPT_TOKENS = 48
#: tokens of a CounterFact statement and of the listed options, and characters per token of the rest of a
#: prompt format: x and x' differ from the subject on, so only the statement and what follows it are patched
STATEMENT_TOKENS = 16
OPTIONS_TOKENS = 20
CHARS_PER_TOKEN = 4
#: tokens of one hint-task target prompt: an MMLU question, its four options and the hint in the chat template
#: (~100-250 Llama-3 tokens), rounded up
HINT_PROMPT_TOKENS = 256
#: bytes of one sweep row besides its float32 patch vector (token and continuation strings, ids, flags)
SWEEP_ROW_BYTES = 300
#: bytes of one row of the hint runs table (question, answers with and without the hint)
HINT_ROW_BYTES = 2_000
#: bytes of one row of a token table (token id, text, sequence, split)
TOKEN_ROW_BYTES = 64
#: bytes of one FineWeb document streamed from the hub (~3 KB of text, plus its share of the parquet pages)
DOC_BYTES = 5_000
#: a tokenizer folder (tokenizer.json is 9-17 MB for Llama-3, Qwen3 and Gemma-2), rounded up
TOKENIZER_BYTES = 50 * MB
#: CounterFact or MMLU from the hub (each well under 50 MB), rounded up
DATASET_BYTES = 50 * MB
#: Neuronpedia's explanation export per feature (gzipped JSONL, a few explanations each)
NEURONPEDIA_BYTES_PER_FEATURE = 1_000
#: features per layer of Gemma Scope's residual SAEs as the downloader reads them (width_131k)
GEMMASCOPE_FEATURES = 131_072
#: LlamaScope's expansion when the repository name does not say (LXR-32x: 32 x 4096 = 131,072)
LLAMASCOPE_EXPANSION = 32
#: the rule features_projection fits Pi_l on this many training sequences (its `n_sequences` param)
PROJECTION_SEQUENCES = 200
#: tokens a simulator prompt adds to each exemplar window it reads (the description and the prompt template);
#: a score reads at most n_top windows
SIMULATOR_PROMPT_TOKENS = 64
#: concepts in the pool the simulator_argmax labels choose from (lib/introspect/data/concepts.txt)
CONCEPTS = 141
#: host bytes of one eval item or prediction (its vector, at most 8192 x 4 bytes, exemplar windows, texts)
EVAL_ITEM_BYTES = 50_000
#: host bytes of one training feature's keys and label (layer, feature, row, description) without its vector
TRAIN_ROW_BYTES = 200
#: host memory of a download's client (huggingface_hub's buffers, the parsed file list)
DOWNLOAD_CLIENT_BYTES = 1 * GB
#: the finetuned simulator (Transluce/features_explain_llama3.1_8b_simulator) is a Llama-3.1-8B fine-tune
SIMULATOR_PARAMS = {"Transluce/features_explain_llama3.1_8b_simulator": 8_030_261_248}
SIMULATOR_DEFAULT_PARAMS = 8_030_261_248  # another finetuned simulator: assume the same 8B size
#: MiniLM (embedding simulator/judge on the CPU): 22.7M parameters, 384-dimensional
MINILM_PARAMS = 22_700_000
MINILM_DIM = 384
#: features.explain.selfie defaults, as introspect.config.SELFIE_DEFAULTS (not imported here: that module
#: imports torch); tests/test_sizing.py checks they agree
SELFIE_DEFAULTS = {"scales": [1.0, 5.0, 10.0, 25.0, 50.0], "max_new_tokens": 25, "batch_size": 16}
#: a patching dataset's size is known only after its sweep (the balancing keeps the (token type, layer chunk)
#: cells where both labels occur, at most patching.balance.max_per_cell rows each): assume this many such cells
#: per layer chunk. The default config's measured train split (370-400 rows at max_per_cell 100, 4 chunks) has
#: about one; 4 gives the paper config 600 x 4 chunks x 4 = 9,600 train rows, near the 10,000 docs/cluster.md
#: used to assume
BALANCED_CELLS_PER_CHUNK = 4


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """The registry sizes of one model that sizing needs."""

    name: str
    n_params: float
    hidden_size: int
    n_layers: int
    vocab_size: int = 128_256
    dtype: str = "bfloat16"
    train_gpus: int | None = None

    @classmethod
    def of(cls, spec: Any, name: str | None = None) -> "ModelSize":
        """From a registry entry: a ``ModelSpec`` (attributes) or a ``models.<name>`` dict of the config.
        A missing n_params is the Llama-style count 13 L h^2 + 2 V h (memory.shape_of)."""
        get = spec.get if isinstance(spec, Mapping) else lambda key, default=None: getattr(spec, key, default)
        entry = {"n_layers": get("n_layers"), "hidden_size": get("hidden_size"), "n_params": get("n_params"),
                 "vocab_size": get("vocab_size")}
        shape = memory.shape_of(entry)
        return cls(name=name or get("name"), n_params=shape.n_params, hidden_size=shape.hidden,
                   n_layers=shape.n_layers, vocab_size=shape.vocab, dtype=get("dtype") or "float32",
                   train_gpus=get("train_gpus"))

    def weight_bytes(self, dtype: str | None = None) -> float:
        """Bytes of the weights in `dtype` (default: the registry's)."""
        return self.n_params * DTYPE_BYTES[dtype or self.dtype]

    @property
    def host_bytes(self) -> float:
        """Host memory of the loaded model: its weights in its dtype, and never less than in bfloat16."""
        return self.n_params * max(DTYPE_BYTES[self.dtype], DTYPE_BYTES["bfloat16"])


def simulator_size(settings: Mapping[str, Any]) -> ModelSize | None:
    """The model a features.simulator loads on compute.device: the finetuned simulator (an 8B Llama), or None
    (the embedding simulator's MiniLM runs on the CPU inside the process overhead; openai loads nothing)."""
    if settings.get("backend") != "finetuned":
        return None
    params = SIMULATOR_PARAMS.get(settings.get("model", ""), SIMULATOR_DEFAULT_PARAMS)
    return ModelSize("simulator", params, 4096, 32, dtype=settings.get("dtype", "bfloat16"))


def gpus_to_hold(device_bytes: float, gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB) -> int:
    """GPUs of `gpu_memory_gb` that hold `device_bytes` with GPU_HEADROOM to spare (0 for nothing)."""
    if device_bytes <= 0:
        return 0
    return math.ceil(device_bytes * (1 + GPU_HEADROOM) / (gpu_memory_gb * GB))


@dataclasses.dataclass(frozen=True)
class Resources:
    """A job's resources: Snakemake's mem_mb, runtime (minutes) and gpu, and its threads (cpus-per-task)."""

    mem_mb: int
    runtime: int
    gpu: int
    threads: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Work:
    """What one job does, in the units the rules of this module price."""

    data_bytes: float = 0.0  # the job's data in host memory (besides model weights)
    device_bytes: float = 0.0  # what the job puts on the GPU besides the models' weights (an SAE)
    model_copies: float = 1.0  # host copies of each loaded model (0: the job does not load it)
    flops: float = 0.0  # bfloat16 model FLOPs (forward passes of the loaded models)
    fp32_flops: float = 0.0  # float32 FLOPs (SAE encoders, nearest-neighbour search)
    decode_steps: float = 0.0  # generation steps, each one read of the models' weights
    download_bytes: float = 0.0
    file_bytes: float = 0.0  # bytes read or written besides the weights (activation caches, tables)
    api_calls: float = 0.0
    api_concurrency: int = DEFAULT_API_CONCURRENCY
    uses_device: bool = True  # runs a model or SAE on compute.device


@dataclasses.dataclass(frozen=True)
class Stage:
    """How a rule is sized: its kind (local: a table or figure; tiny: a download or a small table; data: CPU work
    on data; model: a model or SAE on compute.device; train: explainer training), the compute.gpus stage of its
    jobs, its threads (compute.threads for a compute-heavy job, else 1) and whether it is a `localrules` entry
    (runs in the main Snakemake process, never as a cluster job)."""

    kind: str
    gpus: str | None = None
    threaded: bool = False
    local: bool = False
    # ask for compute.gpus.<stage> even when the job runs nothing on the device (materialise: a stage of one
    # rule, so its GPU count is that rule's own setting)
    stage_gpus_always: bool = False


#: every rule of the workflow (rule `all` and `models` run nothing); a rule missing here is an error
RULES: dict[str, Stage] = {
    # models
    "materialise_tokenizer": Stage("tiny", local=True),  # a download of a few MB
    "materialise_model": Stage("data", "materialise", stage_gpus_always=True),
    # activation patching
    "patching_pairs": Stage("tiny", local=True),  # a download of a few MB
    "patching_sweep": Stage("model", "patching", True),
    "patching_dataset": Stage("data"),
    "patching_train": Stage("train", "train", True),
    "patching_predict": Stage("model", "train", True),
    "table6": Stage("local", local=True),
    "table2": Stage("local", local=True),
    # input ablation (hints)
    "hints_questions": Stage("tiny", local=True),  # a download of a few MB
    "hints_run": Stage("model", "hints", True),
    "hints_dataset": Stage("data"),
    "hints_train": Stage("train", "train", True),
    "hints_predict": Stage("model", "train", True),
    "table7": Stage("local", local=True),
    "table3": Stage("local", local=True),
    # feature descriptions
    "features_corpus": Stage("tiny", local=True),  # max_docs streamed documents (~100 MB for 20,000)
    "features_tokens": Stage("data"),
    "features_activations": Stage("model", "features", True),
    "features_sae": Stage("model", "features", True),
    "features_exemplars": Stage("model", "features", True),
    "features_labels": Stage("model", "features", True),
    "features_split": Stage("data"),
    "features_eval_act": Stage("data", None, True),
    "features_eval_dact": Stage("model", "features", True),
    "features_similarity": Stage("model", "features", True),
    "features_run_similarity": Stage("model", "features", True),  # Figure 6: one run's Pi_l, as Table 5's job
    "features_projection": Stage("model", "features", True),
    "features_train": Stage("train", "train", True),
    "features_predict": Stage("model", "train", True),
    "features_baseline": Stage("data", threaded=True),  # one float32 GEMM per chunk: threads help
    "features_gold": Stage("tiny"),
    "features_selfie": Stage("model", "train", True),
    "features_score": Stage("model", "features", True),
    "table5": Stage("local", local=True),
    "features_sae_table": Stage("local", local=True),
    "table1": Stage("local", local=True),
    "table4": Stage("local", local=True),
    "figure6": Stage("local", local=True),
    "figure5_7": Stage("local", local=True),
}

#: the rules that run in the main Snakemake process, never as cluster jobs (each .smk file's `localrules`):
#: tables and figures (seconds), and the small downloads (tokenizers, CounterFact, MMLU, the FineWeb sample),
#: which then need no network on the compute nodes and wait in no queue. Model weights (materialise_model,
#: up to 141 GB) download in cluster jobs.
LOCAL_RULES = frozenset(rule for rule, stage in RULES.items() if stage.local)


def _round_up(value: float, step: float) -> int:
    return int(math.ceil(max(value, step) / step) * step)


def _runtime(seconds: float) -> int:
    """Minutes asked for a job estimated at `seconds`: with the margin, rounded up, plus the SIGTERM lead."""
    return _round_up(seconds * RUNTIME_MARGIN / 60, RUNTIME_STEP_MINUTES) + SIGTERM_LEAD_MINUTES


class Sizer:
    """:func:`job_resources` for one config, with the data sizes it derives and the training jobs it finds
    (memory.training_jobs) computed once."""

    def __init__(self, config: Mapping[str, Any], root: str | Path = "."):
        self.config = config
        self.root = Path(root)
        self.compute = config.get("compute", {})
        self.models = {name: ModelSize.of(entry, name) for name, entry in config.get("models", {}).items()}
        self._training_jobs: dict[tuple[str, str], memory.TrainingJob] | None = None
        self._cache: dict[tuple, Resources] = {}

    # ---- config-derived sizes ----
    @property
    def device(self) -> str:
        return str(self.compute.get("device", "cpu"))

    @property
    def threads(self) -> int:
        return int(self.compute.get("threads", 1))

    @property
    def gpu_memory_gb(self) -> float:
        return float(self.compute.get("gpu_memory_gb", DEFAULT_GPU_MEMORY_GB))

    @property
    def budget_bytes(self) -> float:
        return int(self.compute.get("memory_budget_mb", DEFAULT_MEMORY_BUDGET_MB)) * MB

    def stage_gpus(self, stage: str | None) -> int:
        return int(self.compute.get("gpus", {}).get(stage, 0)) if stage else 0

    def dtype_of(self, rule: str) -> str:
        """compute.dtype of a rule's jobs: compute.stage_dtype.<its compute.gpus stage> where set, else
        compute.dtype (auto when not set)."""
        stage = RULES[rule].gpus
        overrides = self.compute.get("stage_dtype") or {}
        return str(overrides.get(stage, self.compute.get("dtype", "auto")) if stage else
                   self.compute.get("dtype", "auto"))

    @property
    def features(self) -> Mapping[str, Any]:
        return self.config.get("features") or {}

    def n_tokens(self) -> int:
        """Tokens cached per target (features.activations.max_tokens)."""
        return int(self.features["activations"].get("max_tokens") or FALLBACK_TOKENS)

    def eval_tokens(self) -> float:
        """Eval-split tokens: exemplar windows are drawn from them."""
        return self.n_tokens() * float(self.features["corpus"].get("eval_fraction", 0.2))

    def cache_bytes(self, target: str) -> float:
        """One layer's activation cache: tokens x hidden x 2 bytes (float16)."""
        return self.n_tokens() * self.models[target].hidden_size * 2

    def layers(self, target: str) -> int:
        return len(self.features["targets"][target]["layers"])

    def sae_settings(self, target: str) -> Mapping[str, Any]:
        return self.features["targets"][target].get("sae", self.features.get("sae", {}))

    def features_per_layer(self, target: str) -> int:
        """SAE features per layer: expansion x hidden for a trained SAE, LlamaScope's LXR-{k}x = k x hidden,
        Gemma Scope's 131,072."""
        sae, hidden = self.sae_settings(target), self.models[target].hidden_size
        backend = sae.get("backend", "train")
        if backend == "train":
            return int(sae.get("expansion", 4)) * hidden
        if backend == "gemmascope":
            return GEMMASCOPE_FEATURES
        match = re.search(r"(\d+)x\b", str(sae.get("repo", "")))
        return (int(match.group(1)) if match else LLAMASCOPE_EXPANSION) * hidden

    def sae_bytes(self, target: str) -> float:
        """An SAE's encoder and decoder, float32: 2 x features x hidden x 4 bytes."""
        return 2 * self.features_per_layer(target) * self.models[target].hidden_size * 4

    def exemplar_bytes(self, target: str) -> float:
        """One layer's exemplar table: per feature n_top + n_random windows of `width` float32 activations and
        int64 token rows."""
        ex = self.features["exemplars"]
        return self.features_per_layer(target) * (ex["n_top"] + ex["n_random"]) * ex["width"] * (4 + 8)

    def n_eval_items(self, target: str, evalsets: Iterable[str] = ("sae", "act", "dact")) -> int:
        """Items of a target's eval sets: n_test held-out features, n_act and n_dact vectors, each per layer."""
        sizes = {"sae": self.features["split"]["n_test"] * self.layers(target),
                 "act": self.features["eval"]["n_act"] * self.layers(target),
                 "dact": self.features["eval"]["n_dact"] * self.layers(target)}
        return sum(sizes[e] for e in evalsets)

    def train_pool(self, target: str) -> int:
        """Labelled training features of a target (an upper bound: every SAE feature, minus the held-out ones)."""
        return (self.features_per_layer(target) - self.features["split"]["n_test"]) * self.layers(target)

    def n_questions(self) -> int:
        questions = self.config["hints"]["questions"]
        if questions.get("n"):
            return int(questions["n"])
        return BUILTIN_QUESTIONS if questions.get("backend") == "builtin" else MMLU_TEST_QUESTIONS

    def task_rows(self, task: str, split: str) -> int:
        """Rows of a patching or hint dataset split (upper-bound estimates): patching max_per_cell x n_chunks x
        BALANCED_CELLS_PER_CHUNK train rows, hints the questions' train share (one row per question); the test
        split in proportion to test_fraction. train.max_train and eval.max_test cap them."""
        section = self.config[task]
        fraction = float(section["balance"]["test_fraction"])
        if task == "patching":
            max_per_cell = int(section["balance"].get("max_per_cell", 200))  # BalanceSettings' default
            train = max_per_cell * int(section["n_chunks"]) * BALANCED_CELLS_PER_CHUNK
            test = math.ceil(train * fraction / (1 - fraction))
        else:
            train = math.ceil(self.n_questions() * (1 - fraction))
            test = math.ceil(self.n_questions() * fraction)
        explain = section.get("explain") or {}
        if split == "train":
            rows, cap = train, (explain.get("train") or {}).get("max_train")
        else:
            rows, cap = test, (explain.get("eval") or {}).get("max_test")
        return min(rows, int(cap)) if cap else rows

    def selfie(self) -> Mapping[str, Any]:
        return {**SELFIE_DEFAULTS, **(self.features.get("explain", {}).get("selfie") or {})}

    # ---- training ----
    def training_job(self, task: str, name: str) -> memory.TrainingJob:
        """The memory arithmetic's job of a training rule: a feature run by (base) name, a patching or hint row
        by target/explainer/variant."""
        if self._training_jobs is None:
            self._training_jobs = {(j.task, j.name): j for j in memory.training_jobs(dict(self.config), self.root)}
        return self._training_jobs[(task, name)]

    def training_rows(self, job: memory.TrainingJob, n_per_layer: int | None = None) -> int:
        """Examples one epoch of `job` trains on: a feature run's labelled pool (max_train caps it; a scaling
        point `run@nN` has N per layer), a patching or hint run's assumed train split."""
        if job.task != "features":
            return self.task_rows(job.task, "train")
        target = self._run_target(job.name)
        if n_per_layer is not None:
            return n_per_layer * self.layers(target)
        rows = self.train_pool(target)
        cap = self._run_train(job.name).get("max_train")
        return min(rows, int(cap)) if cap else rows

    def _feature_tables(self) -> list[Mapping[str, Any]]:
        explain = self.features.get("explain") or {}
        return [explain] + ([explain["table4"]] if explain.get("table4") else [])

    def _run_target(self, run: str) -> str:
        base, _ = split_scaled(run)
        return next(t["target"] for t in self._feature_tables() if base in t["runs"])

    def _run_train(self, run: str) -> Mapping[str, Any]:
        base, _ = split_scaled(run)
        table = next(t for t in self._feature_tables() if base in t["runs"])
        return {**self.features["explain"]["train"], **table["runs"][base].get("train", {})}

    def training_gpus(self, explainer: ModelSize) -> int:
        """GPUs (= ranks on CUDA) of a training job: the explainer's train_gpus, else compute.gpus.train; at
        least one when compute.device is cuda (job_ranks launches one rank on a job without GPUs)."""
        gpus = explainer.train_gpus or self.stage_gpus("train")
        return max(gpus, 1) if self.device == "cuda" else gpus

    def training(self, job: memory.TrainingJob, explainer: ModelSize, rows: int) -> Resources:
        """Resources of one training job (docs/cluster.md's training table shows the same numbers)."""
        shape = memory.shape_of({"n_layers": explainer.n_layers, "hidden_size": explainer.hidden_size,
                                 "n_params": explainer.n_params, "vocab_size": explainer.vocab_size})
        gpus = self.training_gpus(explainer)
        threads = self.threads_of(f"{job.task}_train", explainer)
        ranks = gpus if gpus > 0 else int(self.compute.get("processes", {}).get("train", 1))
        weights = explainer.host_bytes
        hours = memory.gpu_hours(job, shape, rows)
        if gpus > 0:
            # every rank builds the explainer on the host (ZeRO-3 partitions it there), rank 0 gathers the whole
            # bf16 state for the save; each rank's loader holds one chunk of the memory budget
            host = ranks * (PROCESS_BYTES + CUDA_HOST_BYTES + weights + self.budget_bytes) + weights
            compute_s = hours * 3600 / gpus
        else:
            # on a CPU the whole training state is in host memory, in float32 (the trainer drops bf16 there):
            # twice the arithmetic's bf16 weights, gradients and activations, its fp32 AdamW state as it is,
            # float32 logits (8 bytes per value for the loss instead of 6), no CUDA overhead
            parts = memory.per_gpu_bytes(job, shape)
            per_rank = (2 * (parts["weights"] + parts["gradients"] + parts["activations"]) + parts["optimiser"]
                        + parts["logits"] * 8 / 6)
            host = ranks * (PROCESS_BYTES + per_rank + self.budget_bytes) + weights
            compute_s = hours * 3600 * memory_gpu_flops() / (threads * CPU_FLOPS_PER_THREAD)
        seconds = STARTUP_SECONDS + (ranks + 1) * weights / FILE_BYTES_PER_SECOND + compute_s
        return Resources(_round_up(host / MB, 1000), _runtime(seconds), gpus, threads)

    def threads_of(self, rule: str, explainer: ModelSize | None = None) -> int:
        """A rule's CPU threads without pricing a job: compute.threads for a compute-heavy rule, 1 for the
        others; a training rule's (at least one per rank) needs its `explainer`."""
        stage = RULES[rule]
        if stage.kind == "train":
            gpus = self.training_gpus(explainer)
            ranks = gpus if gpus > 0 else int(self.compute.get("processes", {}).get("train", 1))
            return max(self.threads, ranks)
        return self.threads if stage.threaded else 1

    # ---- every other rule ----
    def job(self, rule: str, wildcards: Mapping[str, str] | None = None,
            models: Sequence[Any] = ()) -> Resources:
        """Resources of one job of `rule` with `wildcards`, which loads `models` (registry names, ModelSpecs or
        ModelSize; None entries are skipped)."""
        wc = dict(wildcards or {})
        sizes = [m if isinstance(m, ModelSize) else self.models[m] if isinstance(m, str) else ModelSize.of(m)
                 for m in models if m is not None]
        key = (rule, tuple(sorted(wc.items())), tuple(sizes))
        if key not in self._cache:
            self._cache[key] = self._job(rule, wc, sizes)
        return self._cache[key]

    def _job(self, rule: str, wc: dict[str, str], models: list[ModelSize]) -> Resources:
        if rule not in RULES:
            raise KeyError(f"introspect.sizing has no entry for rule {rule!r}: add it to RULES")
        stage = RULES[rule]
        threads = self.threads_of(rule) if stage.kind != "train" else 0
        if stage.kind == "local":
            return Resources(_round_up(TINY_BYTES / MB, 1000), _runtime(0), 0, 1)
        if stage.kind == "train":
            task = rule.removesuffix("_train")
            if task == "features":
                base, n = split_scaled(wc["run"])
                job = self.training_job("features", base)
                return self.training(job, models[0], self.training_rows(job, n))
            job = self.training_job(task, f"{wc['target']}/{wc['explainer']}/{wc['variant']}")
            return self.training(job, models[0], self.training_rows(job))
        work = WORK[rule](self, wc, models)
        return self._price(stage, work, models, threads)

    def _price(self, stage: Stage, work: Work, models: list[ModelSize], threads: int) -> Resources:
        on_device = [m for m in models] if work.uses_device and work.model_copies else []
        gpus = self.stage_gpus(stage.gpus) if work.uses_device or stage.stage_gpus_always else 0
        if stage.gpus == "train":
            # prediction and SelfIE (stage train) run on one device: not the training job's ranks
            gpus = min(gpus, 1)
        if work.uses_device and self.device == "cuda":
            gpus = max(gpus, 1)
        device_bytes = sum(m.weight_bytes() for m in on_device) + work.device_bytes
        if gpus and work.uses_device:
            gpus = max(gpus, gpus_to_hold(device_bytes, self.gpu_memory_gb))
        host = (PROCESS_BYTES + (CUDA_HOST_BYTES if gpus else 0) + work.model_copies * sum(m.host_bytes for m in models)
                + work.device_bytes + DATA_MARGIN * work.data_bytes)
        if stage.kind == "tiny":
            host = max(host, TINY_BYTES)
        weights = sum(m.weight_bytes() for m in models) if work.model_copies else 0.0
        gpu_run = bool(gpus) and work.uses_device
        seconds = (STARTUP_SECONDS + (weights + work.file_bytes) / FILE_BYTES_PER_SECOND
                   + work.download_bytes / DOWNLOAD_BYTES_PER_SECOND
                   + work.api_calls * API_SECONDS / max(1, work.api_concurrency))
        if gpu_run:
            seconds += (work.flops / GPU_INFERENCE_FLOPS + work.fp32_flops / GPU_FP32_FLOPS
                        + work.decode_steps * weights / GPU_WEIGHT_BYTES_PER_SECOND)
        else:
            seconds += ((work.flops + work.fp32_flops) / (threads * CPU_FLOPS_PER_THREAD)
                        + work.decode_steps * weights / CPU_WEIGHT_BYTES_PER_SECOND)
        return Resources(_round_up(host / MB, 1000), _runtime(seconds), gpus, threads)


def memory_gpu_flops() -> float:
    """The per-GPU FLOP/s memory.gpu_hours assumes (its default argument): GPU-hours x this = the job's FLOPs."""
    import inspect

    return float(inspect.signature(memory.gpu_hours).parameters["gpu_flops"].default)


def _params(models: Sequence[ModelSize]) -> float:
    return sum(m.n_params for m in models)


# ---- what each rule does (Work), from the config's data sizes ---------------------------------------------------
def _materialise_tokenizer(s: Sizer, wc, models) -> Work:
    return Work(download_bytes=TOKENIZER_BYTES, uses_device=False, model_copies=0)


def _materialise_model(s: Sizer, wc, models) -> Work:
    spec = s.config["models"][wc["model"]]
    if spec.get("source") == "hf":  # a download: the weights go to disk, never into memory
        return Work(download_bytes=s.models[wc["model"]].weight_bytes(), data_bytes=DOWNLOAD_CLIENT_BYTES,
                    model_copies=0, uses_device=False)
    # gguf_wheel / random: the dequantised GGUF model (or the built one), the plain copy that is saved, and
    # the saved folder loaded again for the logits check
    return Work(model_copies=3, uses_device=False, file_bytes=2 * s.models[wc["model"]].weight_bytes())


def _download_table(s: Sizer, wc, models) -> Work:
    return Work(download_bytes=DATASET_BYTES, data_bytes=DATASET_BYTES, uses_device=False, model_copies=0)


def _features_corpus(s: Sizer, wc, models) -> Work:
    corpus = s.features["corpus"]
    docs = int(corpus.get("max_docs", 10_000)) if corpus.get("backend") == "hf" else 0
    return Work(download_bytes=docs * DOC_BYTES, data_bytes=2 * docs * DOC_BYTES, uses_device=False, model_copies=0)


def _patch_positions(s: Sizer, target: str) -> int:
    """Patched positions per pair: the statement and the part of the target's prompt format after it."""
    fmt = s.config["patching"]["targets"][target].get("prompt_format", "{statement}")
    tail = fmt.partition("{statement}")[2]
    options = tail.count("{options}")
    text = tail.replace("{options}", "")
    return STATEMENT_TOKENS + options * OPTIONS_TOKENS + math.ceil(len(text) / CHARS_PER_TOKEN)


def _patch_rows(s: Sizer, target: str) -> float:
    """Sweep rows: every patched position of every pair x layer chunk (an upper bound: pairs the target gets
    wrong are dropped)."""
    return s.config["patching"]["n_pairs"] * _patch_positions(s, target) * s.config["patching"]["n_chunks"]


def _patching_sweep(s: Sizer, wc, models) -> Work:
    rows, hidden = _patch_rows(s, wc["target"]), s.models[wc["target"]].hidden_size
    row_bytes = hidden * 4 + SWEEP_ROW_BYTES
    # each patched run re-reads the prompt (PATCH_PROMPT_TOKENS), plus the unpatched runs of x and x'
    tokens = rows * PATCH_PROMPT_TOKENS + 2 * s.config["patching"]["n_pairs"] * PATCH_PROMPT_TOKENS
    # the sweep's columns as Python lists of vectors, then the table built from them: two copies
    return Work(data_bytes=2 * rows * row_bytes, flops=2 * _params(models) * tokens, file_bytes=rows * row_bytes)


def _patching_dataset(s: Sizer, wc, models) -> Work:
    rows = _patch_rows(s, wc["target"]) * (s.models[wc["target"]].hidden_size * 4 + SWEEP_ROW_BYTES)
    # the whole sweep table and the split/balanced copies made from it
    return Work(data_bytes=2 * rows, file_bytes=rows, uses_device=False, model_copies=0)


def _predict(s: Sizer, models, items: float, prompt_tokens: int, eval_settings: Mapping[str, Any]) -> Work:
    """Greedy generation for `items` prompts of `prompt_tokens`: one prefill pass, then one read of the weights
    per new token of each batch."""
    batch, new = int(eval_settings.get("batch_size", 16)), int(eval_settings.get("max_new_tokens", 24))
    return Work(data_bytes=items * EVAL_ITEM_BYTES, flops=2 * _params(models) * items * (prompt_tokens + new),
                decode_steps=math.ceil(items / batch) * new)


def _patching_predict(s: Sizer, wc, models) -> Work:
    return _predict(s, models, s.task_rows("patching", "test"), memory.SEQ_LEN["patching"],
                    s.config["patching"]["explain"]["eval"])


def _hints_run(s: Sizer, wc, models) -> Work:
    n = s.n_questions()
    # two forward passes per question (with and without the hint); only the last logits are read
    return Work(data_bytes=2 * n * HINT_ROW_BYTES, flops=2 * _params(models) * 2 * n * HINT_PROMPT_TOKENS)


def _hints_dataset(s: Sizer, wc, models) -> Work:
    return Work(data_bytes=4 * s.n_questions() * HINT_ROW_BYTES, uses_device=False, model_copies=0)


def _hints_predict(s: Sizer, wc, models) -> Work:
    return _predict(s, models, s.task_rows("hints", "test"), memory.SEQ_LEN["hints"],
                    s.config["hints"]["explain"]["eval"])


def _features_tokens(s: Sizer, wc, models) -> Work:
    docs = int(s.features["corpus"].get("max_docs", 10_000))
    return Work(data_bytes=docs * DOC_BYTES + 2 * s.n_tokens() * TOKEN_ROW_BYTES, uses_device=False, model_copies=0)


def _features_activations(s: Sizer, wc, models) -> Work:
    cache = s.cache_bytes(wc["target"])
    # one forward pass over every cached token; the layer's float16 cache, and its copy while it is saved
    return Work(data_bytes=2 * cache, flops=2 * _params(models) * s.n_tokens(), file_bytes=cache)


def _features_sae(s: Sizer, wc, models) -> Work:
    target = wc["target"]
    sae, cache = s.sae_bytes(target), s.cache_bytes(target)
    hidden, n_feat = s.models[target].hidden_size, s.features_per_layer(target)
    settings = s.sae_settings(target)
    vectors = n_feat * hidden * 4  # the feature-vector table (decoder directions, float32)
    if settings.get("backend", "train") == "train":
        epochs = int(settings.get("epochs", 1))
        # encoder and decoder products (2 h F each per token), forward and backward (x3), every train token
        flops = 12 * hidden * n_feat * (s.n_tokens() - s.eval_tokens()) * epochs
        # on the device: weights, gradients and AdamW's two moments
        return Work(data_bytes=cache + 2 * vectors, device_bytes=4 * sae, fp32_flops=flops, file_bytes=cache + sae)
    # a pretrained SAE: download it, then FVU and L0 on the eval tokens (encode and decode)
    return Work(data_bytes=cache + 2 * vectors, device_bytes=sae, download_bytes=sae,
                fp32_flops=4 * hidden * n_feat * s.eval_tokens(), file_bytes=cache + sae)


def _features_exemplars(s: Sizer, wc, models) -> Work:
    target = wc["target"]
    hidden, n_feat = s.models[target].hidden_size, s.features_per_layer(target)
    width = s.features["exemplars"]["width"]
    maxima = s.eval_tokens() / width * n_feat * 4  # window maxima, float32, on the host
    cache, sae = s.cache_bytes(target), s.sae_bytes(target)
    return Work(data_bytes=cache + maxima + 2 * s.exemplar_bytes(target), device_bytes=sae,
                fp32_flops=2 * hidden * n_feat * s.eval_tokens(), file_bytes=cache + sae)


def _simulated_tokens(s: Sizer) -> int:
    """Tokens of one simulator score: n_top exemplar windows with the description and prompt template."""
    ex = s.features["exemplars"]
    return ex["n_top"] * (ex["width"] + SIMULATOR_PROMPT_TOKENS)


def _simulator_work(s: Sizer, models, scores: float) -> Work:
    """`scores` simulator calls: on the finetuned model's device, or as API requests, or with MiniLM on the CPU."""
    settings = s.features["simulator"]
    backend = settings.get("backend")
    if backend == "finetuned":
        return Work(flops=2 * _params(models) * scores * _simulated_tokens(s))
    if backend == "openai":
        # one request per (description, exemplar) of the half a score reads
        ex = s.features["exemplars"]
        per_score = -(-(ex["n_top"] + ex["n_random"]) // 2)
        return Work(api_calls=scores * per_score,
                    api_concurrency=int(settings.get("concurrency", DEFAULT_API_CONCURRENCY)),
                    uses_device=False, model_copies=0)
    return Work(fp32_flops=2 * MINILM_PARAMS * scores * _simulated_tokens(s), uses_device=False, model_copies=0)


def _features_labels(s: Sizer, wc, models) -> Work:
    target = wc["target"]
    labels = s.features["targets"][target].get("labels", s.features.get("labels", {}))
    n_feat = s.features_per_layer(target)
    if labels.get("backend") == "neuronpedia":
        # the layer's explanations are downloaded; a sample of `max_scored` is scored (both halves)
        scored = labels.get("max_scored", 200) or n_feat  # neuronpedia_labels' default; null: every feature
        work = _simulator_work(s, models, 2 * scored)
        work.download_bytes = n_feat * NEURONPEDIA_BYTES_PER_FEATURE
    else:
        # simulator_argmax: every feature against every concept of the pool (embedding dot products)
        ex = s.features["exemplars"]
        work = _simulator_work(s, models, n_feat)
        work.fp32_flops += 2 * MINILM_DIM * n_feat * CONCEPTS * ex["n_top"] * ex["width"]
    work.data_bytes += 2 * s.exemplar_bytes(target) + n_feat * NEURONPEDIA_BYTES_PER_FEATURE
    return work


def _features_split(s: Sizer, wc, models) -> Work:
    target = wc["target"]
    n_feat, hidden, layers = s.features_per_layer(target), s.models[target].hidden_size, s.layers(target)
    # one layer's keys, labels and exemplars at a time, plus one chunk of the memory budget (the vectors stream
    # from the SAE tables to the float16 training file); every layer's tables are read once
    layer = n_feat * hidden * 4 + s.exemplar_bytes(target)
    return Work(data_bytes=s.exemplar_bytes(target) + n_feat * (NEURONPEDIA_BYTES_PER_FEATURE + TRAIN_ROW_BYTES)
                + s.budget_bytes,
                file_bytes=layers * layer + s.train_pool(target) * hidden * 2, uses_device=False, model_copies=0)


def _nearest_work(s: Sizer, target: str, n_train: float, items: float) -> Work:
    hidden = s.models[target].hidden_size
    return Work(data_bytes=s.budget_bytes + items * hidden * 4 + n_train * TRAIN_ROW_BYTES,
                fp32_flops=2 * n_train * hidden * items,
                file_bytes=3 * n_train * hidden * 2, uses_device=False, model_copies=0)


def _features_baseline(s: Sizer, wc, models) -> Work:
    target = wc["target"]
    _, n = split_scaled(wc["baseline"])
    n_train = n * s.layers(target) if n is not None else s.train_pool(target)
    return _nearest_work(s, target, n_train, s.n_eval_items(target))


def _features_gold(s: Sizer, wc, models) -> Work:
    return Work(data_bytes=s.n_eval_items(wc["target"], ["sae"]) * EVAL_ITEM_BYTES, uses_device=False,
                model_copies=0)


def _features_eval_act(s: Sizer, wc, models) -> Work:
    target = wc["target"]
    hidden, cache = s.models[target].hidden_size, s.cache_bytes(target)
    # one layer's cache at a time (as float16, and a float32 slice); each vector against every eval token
    return Work(data_bytes=2 * cache,
                fp32_flops=2 * s.features["eval"]["n_act"] * s.eval_tokens() * hidden * s.layers(target),
                file_bytes=s.layers(target) * cache, uses_device=False, model_copies=0)


def _features_eval_dact(s: Sizer, wc, models) -> Work:
    target = wc["target"]
    hidden, cache, n = s.models[target].hidden_size, s.cache_bytes(target), s.features["eval"]["n_dact"]
    return Work(data_bytes=2 * cache, flops=2 * _params(models) * 2 * n * PATCH_PROMPT_TOKENS,
                fp32_flops=2 * n * s.eval_tokens() * hidden * s.layers(target), file_bytes=s.layers(target) * cache)


def _features_similarity(s: Sizer, wc, models) -> Work:
    target = wc["target"]
    seq_len = s.features["activations"]["seq_len"]
    # the sequences of the top 3 windows of n_features held-out features per layer, through the explainer
    sequences = 3 * s.features["similarity"]["n_features"] * s.layers(target)
    return Work(data_bytes=2 * s.cache_bytes(target), flops=2 * _params(models) * sequences * seq_len,
                file_bytes=s.layers(target) * s.cache_bytes(target))


def _features_projection(s: Sizer, wc, models) -> Work:
    target = wc["target"]
    seq_len, layers = s.features["activations"]["seq_len"], s.layers(target)
    h_t, h_e = s.models[target].hidden_size, models[0].hidden_size
    tokens = PROJECTION_SEQUENCES * seq_len
    # least squares per layer: the normal equations (tokens x h_t x h_e) and the solve (h_t^3)
    fp32 = layers * (2 * tokens * h_t * (h_t + h_e) + h_t ** 3)
    return Work(data_bytes=2 * s.cache_bytes(target) + layers * h_t * h_e * 4 + 2 * tokens * (h_t + h_e) * 4,
                flops=2 * _params(models) * tokens, fp32_flops=fp32, file_bytes=layers * s.cache_bytes(target))


def _features_predict(s: Sizer, wc, models) -> Work:
    return _predict(s, models, s.n_eval_items(wc["target"]), memory.SEQ_LEN["features"],
                    s.features["explain"]["eval"])


def _features_selfie(s: Sizer, wc, models) -> Work:
    selfie = s.selfie()
    items = s.n_eval_items(wc["target"]) * len(selfie["scales"])
    return _predict(s, models, items, memory.SEQ_LEN["features"], selfie)


def _features_score(s: Sizer, wc, models) -> Work:
    target, method = wc["target"], wc["method"]
    evalsets = ["sae"] if method == "gold" else ["sae", "act", "dact"]
    candidates = len(s.selfie()["scales"]) if is_selfie(split_scaled(method)[0]) else 1
    work = _simulator_work(s, models, s.n_eval_items(target, evalsets) * candidates)
    judge = s.features["explain"].get("judge", {})
    if judge.get("backend") == "openai":  # one request per held-out SAE item and candidate description
        work.api_calls += s.n_eval_items(target, ["sae"]) * candidates
        work.api_concurrency = int(judge.get("concurrency", DEFAULT_API_CONCURRENCY))
    work.data_bytes += s.n_eval_items(target) * EVAL_ITEM_BYTES + 2 * s.n_tokens() * TOKEN_ROW_BYTES
    return work


WORK: dict[str, Callable[[Sizer, dict, list], Work]] = {
    "materialise_tokenizer": _materialise_tokenizer,
    "materialise_model": _materialise_model,
    "patching_pairs": _download_table,
    "patching_sweep": _patching_sweep,
    "patching_dataset": _patching_dataset,
    "patching_predict": _patching_predict,
    "hints_questions": _download_table,
    "hints_run": _hints_run,
    "hints_dataset": _hints_dataset,
    "hints_predict": _hints_predict,
    "features_corpus": _features_corpus,
    "features_tokens": _features_tokens,
    "features_activations": _features_activations,
    "features_sae": _features_sae,
    "features_exemplars": _features_exemplars,
    "features_labels": _features_labels,
    "features_split": _features_split,
    "features_eval_act": _features_eval_act,
    "features_eval_dact": _features_eval_dact,
    "features_similarity": _features_similarity,
    "features_run_similarity": _features_similarity,
    "features_projection": _features_projection,
    "features_predict": _features_predict,
    "features_baseline": _features_baseline,
    "features_gold": _features_gold,
    "features_selfie": _features_selfie,
    "features_score": _features_score,
}


def job_resources(rule: str, config: Mapping[str, Any], wildcards: Mapping[str, str] | None = None,
                  models: Sequence[Any] = (), root: str | Path = ".") -> Resources:
    """Resources of one job of `rule` (its `wildcards`) that loads `models` (registry names, ModelSpecs or
    ModelSize), under `config`; `root` resolves the DeepSpeed config paths of training sections."""
    return Sizer(config, root).job(rule, wildcards, models)


# ---- disk at a config's scale (docs/cluster.md) --------------------------------------------------------------
def disk_usage(config: Mapping[str, Any], root: str | Path = ".") -> list[tuple[str, str, float]]:
    """(what, formula, bytes) of the large files a config's full run writes, largest stages first."""
    s = Sizer(config, root)
    rows: list[tuple[str, str, float]] = []
    names = config.get("materialise", {}).get("models", list(s.models))
    rows.append(("resources/models (materialised models)", "sum of n_params x bytes of the registry dtype",
                 sum(s.models[n].weight_bytes() for n in names)))
    if s.features:
        for target in s.features["targets"]:
            hidden, layers, n_feat = s.models[target].hidden_size, s.layers(target), s.features_per_layer(target)
            rows.append((f"{target}: activation caches",
                         f"{s.n_tokens():,} tokens x {hidden} x 2 B (fp16) x {layers} layers",
                         layers * s.cache_bytes(target)))
            rows.append((f"{target}: SAE weights", f"{layers} layers x 2 x {n_feat:,} x {hidden} x 4 B (fp32)",
                         layers * s.sae_bytes(target)))
            rows.append((f"{target}: SAE feature-vector tables",
                         f"{layers} x {n_feat:,} x {hidden} x 4 B (fp32 parquet)",
                         layers * n_feat * hidden * 4))
            rows.append((f"{target}: training vectors", f"{s.train_pool(target):,} features x {hidden} x 2 B (fp16)",
                         s.train_pool(target) * hidden * 2))
            rows.append((f"{target}: exemplar tables", f"{layers} x {n_feat:,} features x (n_top + n_random) windows x "
                         "width x 12 B", layers * s.exemplar_bytes(target)))
    if config.get("patching"):
        for target in config["patching"]["targets"]:
            row = s.models[target].hidden_size * 4 + SWEEP_ROW_BYTES
            n = _patch_rows(s, target)
            rows.append((f"{target}: patching sweep", f"{n:,.0f} rows x ({s.models[target].hidden_size} x 4 + "
                         f"{SWEEP_ROW_BYTES}) B", n * row))
    explainers, resume = 0.0, 0.0
    for job in memory.training_jobs(dict(config), root):
        size = s.models[job.explainer]
        shape = memory.shape_of({"n_layers": size.n_layers, "hidden_size": size.hidden_size,
                                 "n_params": size.n_params, "vocab_size": size.vocab_size})
        trained = memory.trained_params(job, shape)
        copies = 1
        if job.task == "features":
            scaling = (s.features.get("explain", {}).get("scaling") or {})
            copies += len(scaling.get("n_train", [])) if job.name in scaling.get("runs", []) else 0
        explainers += copies * size.weight_bytes()
        resume = max(resume, 14 * trained)
    rows.append(("explainer checkpoints (results/*/explainers)", "one model folder (registry dtype) per training job",
                 explainers))
    rows.append(("a running training job's resume checkpoint", "trained params x 14 B (bf16 weights + fp32 AdamW "
                 "master and moments), largest job; removed when it ends", resume))
    return rows
