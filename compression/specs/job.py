"""The job spec: what a user asks for, validated the same way by the API, the worker and the CLI."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, ValidationError, ValidationInfo, field_validator, model_validator

from compression.specs.execution import ExecutionSpec
from compression.specs.common import StrictModel, validate_data_path, validate_model_ref, validate_revision
from compression.specs.registry import Method, options_class

CalibrationCorpus = Literal["wikitext2", "c4", "tinystories", "alpaca", "file", "dataset", "texts"]
# Ids of datasets uploaded through the service (POST /v1/datasets): uuid4 hex.
DATASET_ID = r"^[0-9a-f]{32}$"
SHA256 = r"^[0-9a-f]{64}$"
# Inline calibration texts travel in the job body (and its row): a few paragraphs, not a corpus.
MAX_INLINE_TEXTS = 256
MAX_INLINE_TEXT_CHARS = 20_000
InlineText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_INLINE_TEXT_CHARS)]
EvaluationCorpus = Literal["wikitext2", "tinystories", "dataset"]


class CalibrationSpec(StrictModel):
    """Seeded token windows for methods that look at data."""

    source: CalibrationCorpus = Field(
        "wikitext2",
        description="A named corpus, 'file' for a user-supplied .txt / .jsonl (field 'text'), 'dataset' "
        "for a dataset uploaded with POST /v1/datasets, or 'texts' for strings given inline in 'texts'.",
    )
    path: str | None = Field(
        None, description="With source='file': the text or JSONL file (under an allowed data root)."
    )
    dataset_id: str | None = Field(
        None, pattern=DATASET_ID, description="With source='dataset': the id POST /v1/datasets returned."
    )
    dataset_sha256: str | None = Field(
        None, pattern=SHA256, description="With source='dataset': the dataset's sha256. The service fills it in "
        "at submission (or refuses the job when a given one differs) and the worker checks what it downloads.",
    )
    texts: list[InlineText] | None = Field(
        None, min_length=1, max_length=MAX_INLINE_TEXTS,
        description=f"With source='texts': up to {MAX_INLINE_TEXTS} strings of up to {MAX_INLINE_TEXT_CHARS} "
                    "characters, joined by blank lines into the calibration text.",
    )
    samples: int = Field(32, ge=1, le=4096, description="Number of windows.")
    seq_len: int = Field(256, ge=8, le=32768, description="Tokens per window.")

    _path = field_validator("path")(validate_data_path)

    @model_validator(mode="after")
    def _path_iff_file(self) -> "CalibrationSpec":
        if self.source == "file" and not self.path:
            raise ValueError("calibration.path is required when calibration.source is 'file'")
        if self.source != "file" and self.path:
            raise ValueError("calibration.path is only used with calibration.source='file'")
        if self.source == "texts" and not self.texts:
            raise ValueError("calibration.texts (a list of strings) is required when calibration.source is 'texts'")
        if self.source != "texts" and self.texts:
            raise ValueError("calibration.texts is only used with calibration.source='texts'")
        if self.source == "dataset" and not self.dataset_id:
            raise ValueError("calibration.dataset_id is required when calibration.source is 'dataset'")
        if self.source != "dataset" and (self.dataset_id or self.dataset_sha256):
            raise ValueError("calibration.dataset_id and dataset_sha256 are only used with calibration.source='dataset'")
        return self


# lm-evaluation-harness task names; compression.zeroshot.TASKS is the same list (a test keeps them equal).
ZeroShotTask = Literal["piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande", "openbookqa"]


class EvaluationSpec(StrictModel):
    """Perplexity before and after on held-out text: whole text tokenized, non-overlapping windows;
    optionally zero-shot multiple choice scored as lm-evaluation-harness does."""

    enabled: bool = True
    corpus: EvaluationCorpus = Field(
        "wikitext2", description="A named held-out corpus, or 'dataset' for one uploaded with POST /v1/datasets.")
    dataset_id: str | None = Field(
        None, pattern=DATASET_ID, description="With corpus='dataset': the id POST /v1/datasets returned."
    )
    dataset_sha256: str | None = Field(
        None, pattern=SHA256, description="With corpus='dataset': its sha256, pinned by the service at submission."
    )
    seq_len: int = Field(512, ge=8, le=32768)
    max_windows: int | None = Field(16, ge=1, description="Score only the first N windows (None: all).")
    batch_size: int = Field(1, ge=1, le=256)
    zeroshot: list[ZeroShotTask] = Field(
        default_factory=list, max_length=6,
        description="Zero-shot tasks (lm-evaluation-harness names) scored before and after; none by default.",
    )
    zeroshot_limit: int | None = Field(
        200, ge=1, le=100_000, description="Score only the first N items of each zero-shot task (None: all)."
    )

    @field_validator("zeroshot")
    @classmethod
    def _distinct_tasks(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("evaluation.zeroshot lists a task twice")
        return value

    @model_validator(mode="after")
    def _dataset_iff_dataset(self) -> "EvaluationSpec":
        if self.corpus == "dataset" and not self.dataset_id:
            raise ValueError("evaluation.dataset_id is required when evaluation.corpus is 'dataset'")
        if self.corpus != "dataset" and (self.dataset_id or self.dataset_sha256):
            raise ValueError("evaluation.dataset_id and dataset_sha256 are only used with evaluation.corpus='dataset'")
        return self


class ExportSpec(StrictModel):
    dense: bool = Field(
        False, description="Merge low-rank factors back into dense weights (loads anywhere, saves nothing)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="Weights dtype of the artifact (default: the model's own)."
    )
    push_to_hub: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$",
        description="Service only: also push the artifact to this Hugging Face repository ('org/name', created "
        "if missing) with the worker's SPECTRA_HUB_TOKEN.",
    )


class JobSpec(StrictModel):
    """One compression job."""

    model: str = Field(..., description="Hugging Face id 'org/name' or an allowed local model name.")
    revision: str | None = Field(None, description="Hub branch, tag or commit.")
    method: Method
    target_ratio: float = Field(
        ..., gt=0.0, lt=1.0, description="Fraction of decoder-layer linear parameters to remove."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, validate_default=True, description="Method settings; see GET /v1/methods."
    )
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    execution: ExecutionSpec = Field(
        default_factory=ExecutionSpec,
        description="Resident or layer-by-layer execution and the memory limits the preflight estimate is held to.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Compute dtype of the model while compressing."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)

    _model_ref = field_validator("model")(validate_model_ref)
    _revision = field_validator("revision")(validate_revision)

    @field_validator("revision")
    @classmethod
    def _revision_on_hub_ids_only(cls, value: str | None, info: ValidationInfo) -> str | None:
        model = info.data.get("model")
        if value is not None and model is not None and (model.startswith("/") or "/" not in model):
            raise ValueError("revision applies to Hugging Face ids ('org/name') only; a local model folder "
                             "has no revisions: leave revision out")
        return value

    @field_validator("options")
    @classmethod
    def _validate_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        method = info.data.get("method")
        if method is None:  # the method itself was invalid; that error is reported on its own
            return value
        try:
            parsed = options_class(method).model_validate(value)
        except ValidationError as exc:
            details = "; ".join(
                f"options.{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValueError(f"invalid options for method '{Method(method).value}': {details}") from None
        # Store the normalized options (defaults filled in) so the job row records what ran.
        return parsed.model_dump(mode="json")

    def method_options(self) -> BaseModel:
        """The options parsed into the method's own config class."""
        return options_class(self.method).model_validate(self.options)
