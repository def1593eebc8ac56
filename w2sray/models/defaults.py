"""Per-model-family defaults: size, shape and training settings, in ONE table keyed by hub id.

Two users, one table (no copies elsewhere):

- The spec (w2sray/spec.py, ``SweepSpec.train_for``): a model whose source has an entry here
  (a hub id or a built-in ``w2s-tiny-*``; never a local path) takes the entry's ``lr``,
  ``batch_size`` and ``gradient_checkpointing`` (``SPEC_TRAIN_FIELDS``) for every training
  setting that the spec writes neither in its top-level ``train:`` nor in the model's own
  ``train:``. Precedence, lowest first: TrainSettings defaults < this table < the spec's
  top-level ``train:`` < the model's ``train:``. These values are part of the resolved settings
  and so of the run keys (w2sray/runs.py), like any value the spec writes.
- The resource planner (``w2sray plan --gpu-mem``): sizes and shapes for memory estimates and a
  suggested workers / ZeRO stage / offload, printed only; the spec's ``resources`` decide.

The table gives a spec no ``resources``: nothing here justifies a GPU count or a ZeRO stage per
model (the planner derives those from the GPU's memory, which a spec does not know), so those
stay the spec's (Resources defaults < top-level ``resources:`` < the model's ``resources:``).
Nor ``dtype``: the table's "bf16 on GPU, fp32 on CPU" is what ``train.dtype: auto``, the
TrainSettings default, already does.

Where the numbers come from:

- ``params``: the published parameter count of the released model (whole model, including an
  untied LM head that the classifier does not load, so for untied models the planner's estimate
  is a little conservative). GPT-2 and Pythia are exact counts (GPT-2: HF ``GPT2Model``; Pythia:
  the Pythia paper's table, Biderman et al. 2023); Qwen2.5 / Qwen3 / Llama-3 / Mistral are the
  rounded sizes on the model cards ("7.61B" and so on). Built-ins are counted from
  BUILTIN_LADDER by formula (see builtin_params).
- ``hidden`` / ``layers``: ``hidden_size`` (``n_embd``) and ``num_hidden_layers`` (``n_layer``)
  of the model's config.json; used for the activation estimate.
- ``lr``, ``batch_size``, ``gradient_checkpointing``: from openai/weak-to-strong
  (Burns et al. 2023), ``weak_to_strong/config.py`` MODEL_CONFIGS, where they exist there:
  gpt2 and gpt2-medium 5e-5, gpt2-large and gpt2-xl 1e-5 (xl with gradient checkpointing),
  EleutherAI/pythia-410m 5e-5, mistralai/Mistral-7B-v0.1 1e-5 with gradient checkpointing; the
  repo notes its rates were "not particularly tuned" and work at train batch size 32. Every
  other value is CHOSEN here by the same pattern: 5e-5 below 500M parameters, 1e-5 above,
  batch 32, gradient checkpointing from about 1.5B parameters (where that repo turns it on for
  gpt2-xl, Qwen-1_8B and Mistral-7B). Built-ins: lr 1e-3, chosen (sweeps/quickstart.yaml).
- ``dtype``: bf16 on GPU is what the training loop does with the spec's default
  ``train.dtype: auto`` (w2sray/train/zero.py resolve_bf16: bf16 when the GPU supports it, fp32
  on CPU).

The training loop enables gradient checkpointing when the resolved ``train.gradient_checkpointing``
is true (the table's value unless the spec writes one); the planner estimates memory with that
setting and notes the table's recommendation where the spec turns it off.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, replace

from w2sray.models.registry import BUILTIN_LADDER

# The corpus tokenizer's vocabulary cap (w2sray/data/tokenizer.py: build_corpus_tokenizer), an
# upper bound on a built-in model's vocabulary; the model's n_positions (registry.load_model).
BUILTIN_VOCAB_MAX = 8000
BUILTIN_POSITIONS = 512

_BURNS = "openai/weak-to-strong weak_to_strong/config.py"

# The TrainSettings fields a table entry supplies to a spec (see the module docstring).
SPEC_TRAIN_FIELDS = ("lr", "batch_size", "gradient_checkpointing")


@dataclass(frozen=True)
class ModelDefaults:
    family: str
    params: int  # published parameter count (see the module docstring)
    hidden: int  # hidden_size
    layers: int  # num_hidden_layers
    lr: float
    batch_size: int = 32
    gradient_checkpointing: bool = False
    dtype: str = "bf16"  # on GPU; fp32 on CPU
    provenance: str = ""  # where the training values come from

    def train_overrides(self) -> dict[str, float | int | bool]:
        """The table's training values a spec takes (SPEC_TRAIN_FIELDS), as a ``train:``
        mapping."""
        return {f: getattr(self, f) for f in SPEC_TRAIN_FIELDS}


def gpt2_params(vocab: int, positions: int, hidden: int, layers: int) -> int:
    """Exact parameter count of a transformers GPT2Model: token and position embeddings,
    ``layers`` blocks of 12 h^2 + 13 h (attention 4 h^2 + 4 h, MLP 8 h^2 + 5 h, two layer norms
    4 h) and the final layer norm."""
    per_layer = 12 * hidden**2 + 13 * hidden
    return (vocab + positions) * hidden + layers * per_layer + 2 * hidden


def builtin_params(name: str, vocab: int = BUILTIN_VOCAB_MAX) -> int:
    """Parameters of a built-in ladder model (backbone; the 2-way head adds 2 h + 2)."""
    cfg = BUILTIN_LADDER[name]
    return gpt2_params(vocab, BUILTIN_POSITIONS, cfg["n_embd"], cfg["n_layer"])


def _lr(params: float) -> float:
    return 5e-5 if params < 5e8 else 1e-5


def _entry(
    family: str, params: float, hidden: int, layers: int, provenance: str = "", **kw
) -> ModelDefaults:
    """An entry whose training values follow the chosen pattern unless given (kw)."""
    return ModelDefaults(
        family=family,
        params=int(params),
        hidden=hidden,
        layers=layers,
        lr=kw.pop("lr", _lr(params)),
        gradient_checkpointing=kw.pop("gradient_checkpointing", params >= 1.5e9),
        provenance=provenance or "chosen (5e-5 below 500M params, else 1e-5; batch 32)",
        **kw,
    )


def _table() -> dict[str, ModelDefaults]:
    t: dict[str, ModelDefaults] = {}

    def add(patterns: tuple[str, ...] | str, d: ModelDefaults) -> None:
        for p in (patterns,) if isinstance(patterns, str) else patterns:
            t[p] = d

    # GPT-2 (hub ids "gpt2" and "openai-community/gpt2"); exact GPT2Model counts.
    for size, hidden, layers, lr, ckpt in (
        ("", 768, 12, 5e-5, False),
        ("-medium", 1024, 24, 5e-5, False),
        ("-large", 1280, 36, 1e-5, False),
        ("-xl", 1600, 48, 1e-5, True),
    ):
        d = ModelDefaults(
            family="gpt2",
            params=gpt2_params(50257, 1024, hidden, layers),
            hidden=hidden,
            layers=layers,
            lr=lr,
            gradient_checkpointing=ckpt,
            provenance=_BURNS,
        )
        add((f"gpt2{size}", f"openai-community/gpt2{size}"), d)

    # Pythia (also matches the -deduped variants); total params from the Pythia paper.
    for size, params, hidden, layers in (
        ("14m", 14_067_712, 128, 6),
        ("31m", 30_494_720, 256, 6),
        ("70m", 70_426_624, 512, 6),
        ("160m", 162_322_944, 768, 12),
        ("410m", 405_334_016, 1024, 24),
        ("1b", 1_011_781_632, 2048, 16),
        ("1.4b", 1_414_647_808, 2048, 24),
        ("2.8b", 2_775_208_960, 2560, 32),
        ("6.9b", 6_857_302_016, 4096, 32),
        ("12b", 11_846_072_320, 5120, 36),
    ):
        prov = f"{_BURNS} (pythia-410m)" if size == "410m" else ""
        add(f"EleutherAI/pythia-{size}", _entry("pythia", params, hidden, layers, prov))

    # Qwen2.5 (base and -Instruct); model-card sizes.
    for size, params, hidden, layers in (
        ("0.5B", 0.49e9, 896, 24),
        ("1.5B", 1.54e9, 1536, 28),
        ("3B", 3.09e9, 2048, 36),
        ("7B", 7.61e9, 3584, 28),
        ("14B", 14.7e9, 5120, 48),
        ("32B", 32.5e9, 5120, 64),
        ("72B", 72.7e9, 8192, 80),
    ):
        add(f"Qwen/Qwen2.5-{size}", _entry("qwen2.5", params, hidden, layers))

    # Qwen3 dense models (and -Base); model-card sizes.
    for size, params, hidden, layers in (
        ("0.6B", 0.6e9, 1024, 28),
        ("1.7B", 1.7e9, 2048, 28),
        ("4B", 4.0e9, 2560, 36),
        ("8B", 8.2e9, 4096, 36),
        ("14B", 14.8e9, 5120, 40),
        ("32B", 32.8e9, 5120, 64),
    ):
        add(f"Qwen/Qwen3-{size}", _entry("qwen3", params, hidden, layers))

    # Llama 3 / 3.1 / 3.2 / 3.3 (gated on the hub); model-card sizes.
    llama = (
        (("meta-llama/Llama-3.2-1B",), 1.23e9, 2048, 16),
        (("meta-llama/Llama-3.2-3B",), 3.21e9, 3072, 28),
        (("meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-8B"), 8.03e9, 4096, 32),
        (
            (
                "meta-llama/Meta-Llama-3-70B",
                "meta-llama/Llama-3.1-70B",
                "meta-llama/Llama-3.3-70B",
            ),
            70.6e9,
            8192,
            80,
        ),
        (("meta-llama/Llama-3.1-405B",), 405e9, 16384, 126),
    )
    for patterns, params, hidden, layers in llama:
        add(patterns, _entry("llama3", params, hidden, layers))

    # Mistral 7B (v0.1, v0.2/v0.3 Instruct, ...).
    add(
        "mistralai/Mistral-7B",
        _entry(
            "mistral",
            7.24e9,
            4096,
            32,
            f"{_BURNS} (Mistral-7B-v0.1)",
            lr=1e-5,
            gradient_checkpointing=True,
        ),
    )

    # Built-in tiny ladder: counted, not published.
    for name, cfg in BUILTIN_LADDER.items():
        add(
            name,
            ModelDefaults(
                family="w2s-tiny",
                params=builtin_params(name),
                hidden=cfg["n_embd"],
                layers=cfg["n_layer"],
                lr=1e-3,
                provenance="chosen (sweeps/quickstart.yaml); params counted with vocab <= 8000",
            ),
        )
    return t


# Hub id pattern -> defaults. A pattern matches a source equal to it or extending it with a
# "-suffix" (gpt2-xl matches "gpt2-xl"; Qwen/Qwen2.5-7B matches "Qwen/Qwen2.5-7B-Instruct");
# fnmatch wildcards are allowed; case is ignored (the hub ignores it too).
MODEL_DEFAULTS: dict[str, ModelDefaults] = _table()


def _matches(source: str, pattern: str) -> bool:
    s, p = source.lower(), pattern.lower()
    return fnmatch.fnmatchcase(s, p) or fnmatch.fnmatchcase(s, p + "-*")


def model_defaults(source: str) -> ModelDefaults | None:
    """The table entry of the longest pattern matching ``source`` (a hub id or built-in name),
    or None. Local paths are not matched: their names say nothing reliable about the model."""
    best = max((p for p in MODEL_DEFAULTS if _matches(source, p)), key=len, default=None)
    return MODEL_DEFAULTS[best] if best is not None else None


def spec_train_defaults(source: str) -> dict[str, float | int | bool]:
    """The training values the table gives a spec's model with this ``source``: its entry's
    SPEC_TRAIN_FIELDS, or {} when there is no entry or the source names a local directory
    (a folder called "gpt2" in the working directory is loaded as that folder, not the hub's)."""
    if source.startswith(("/", "./", "../", "~")) or os.path.exists(os.path.expanduser(source)):
        return {}
    d = model_defaults(source)
    return d.train_overrides() if d is not None else {}


def local_model_defaults(path: str, trust_remote_code: bool = False) -> ModelDefaults | None:
    """Size and shape of a local model directory, counted from its config.json without
    allocating weights (torch's meta device); training values follow the chosen pattern.
    None when the config cannot be read or the model not built."""
    path = os.path.expanduser(path)
    if not os.path.isfile(os.path.join(path, "config.json")):
        return None
    try:
        import torch
        from transformers import AutoConfig, AutoModel

        cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModel.from_config(cfg, trust_remote_code=trust_remote_code)
        params = sum(p.numel() for p in model.parameters())
        hidden, layers = int(cfg.hidden_size), int(cfg.num_hidden_layers)
    except Exception:  # an unknown architecture, remote code, a broken config: no estimate
        return None
    d = _entry(str(cfg.model_type), params, hidden, layers)
    return replace(d, provenance=f"counted from {path}/config.json; {d.provenance}")
