"""Every error code a user can see, and what each one means.

Codes appear in three places: a job's ``error.code``, a teacher's or dataset's ``error.code``
(why validation rejected the upload) and, for HTTP errors, the last part of a problem's
``type`` URI (``/problems/{code}``, served as a page by the API). Code that reports an error
names it with ``ErrorCode``, never a bare string, and every member has a catalogue entry:
``tests/core/test_errors.py`` checks both.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum, unique


@unique
class ErrorCode(StrEnum):
    # HTTP problems (the status is in the catalogue).
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    UNSUPPORTED_FORMAT = "unsupported_format"
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    SERVICE_UNAVAILABLE = "service_unavailable"
    STORAGE_FULL = "storage_full"
    # Archives (zip, .npz, .pt2).
    BAD_ARCHIVE = "bad_archive"
    ARCHIVE_DUPLICATE = "archive_duplicate"
    ARCHIVE_ENCRYPTED = "archive_encrypted"
    ARCHIVE_LINK = "archive_link"
    ARCHIVE_TOO_LARGE = "archive_too_large"
    ARCHIVE_TRAVERSAL = "archive_traversal"
    TOO_MANY_ENTRIES = "too_many_entries"
    UNKNOWN_MEMBER = "unknown_member"
    # Code hidden in model files.
    UNSAFE_PICKLE = "unsafe_pickle"
    UNSAFE_LOCATION = "unsafe_location"
    UNSAFE_CONSTANT = "unsafe_constant"
    UNSAFE_EXPRESSION = "unsafe_expression"
    EXTERNAL_DATA = "external_data"
    TORCHSCRIPT_DISABLED = "torchscript_disabled"
    # Teachers.
    BAD_TEACHER = "bad_teacher"
    BAD_INPUTS = "bad_inputs"
    BAD_OUTPUT = "bad_output"
    BAD_OUTPUT_NAME = "bad_output_name"
    BAD_OUTPUT_KIND = "bad_output_kind"
    AMBIGUOUS_OUTPUT = "ambiguous_output"
    UNKNOWN_INPUT_SHAPE = "unknown_input_shape"
    UNSUPPORTED_INPUT = "unsupported_input"
    UNSUPPORTED_OPERATOR = "unsupported_operator"
    DRY_RUN_FAILED = "dry_run_failed"
    TEACHER_CRASHED = "teacher_crashed"
    BAD_CHILD_OUTPUT = "bad_child_output"
    # Datasets.
    BAD_HEADER = "bad_header"
    BAD_CSV = "bad_csv"
    BAD_PARQUET = "bad_parquet"
    BAD_SHAPE = "bad_shape"
    BAD_LAYOUT = "bad_layout"
    BAD_LABELS = "bad_labels"
    BAD_IMAGE = "bad_image"
    IMAGE_TOO_LARGE = "image_too_large"
    UNSUPPORTED_IMAGE = "unsupported_image"
    UNSUPPORTED_DTYPE = "unsupported_dtype"
    STRUCTURED_ARRAY = "structured_array"
    OBJECT_ARRAY = "object_array"
    NON_NUMERIC = "non_numeric"
    NON_FINITE_INPUTS = "non_finite_inputs"
    MISSING_VALUES = "missing_values"
    NPZ_MEMBERS = "npz_members"
    MISSING_INPUT = "missing_input"
    BAD_TOKENIZER = "bad_tokenizer"
    BAD_TEXT = "bad_text"
    TOKENIZER_MISMATCH = "tokenizer_mismatch"
    UNSAFE_MODEL_FILE = "unsafe_model_file"
    REMOTE_CODE = "remote_code"
    UNSUPPORTED_ARCHITECTURE = "unsupported_architecture"
    DATASET_TOO_SMALL = "dataset_too_small"
    # Jobs.
    BAD_SPEC = "bad_spec"
    BAD_STUDENT_CONFIG = "bad_student_config"
    BAD_PREPROCESSING = "bad_preprocessing"
    SHAPE_MISMATCH = "shape_mismatch"
    STUDENT_SIZE = "student_size"
    CANCELLED = "cancelled"
    TIME_LIMIT = "time_limit"
    OUT_OF_MEMORY = "out_of_memory"
    WORKER_CRASHED = "worker_crashed"
    WORKER_LOST = "worker_lost"
    SANDBOX_UNAVAILABLE = "sandbox_unavailable"


@dataclass(frozen=True)
class CatalogueEntry:
    title: str
    meaning: str
    action: str
    status: int | None = None  # the HTTP status of a problem with this code, if it is one


_RESUBMIT = "Fix the file and upload it again."
_REEXPORT = "Export the model again with torch.export.save or to ONNX and upload the new file."
_SUPPORT = "Retry; if it happens again, report it to the operator with the job id."

CATALOGUE: dict[ErrorCode, CatalogueEntry] = {
    ErrorCode.BAD_REQUEST: CatalogueEntry(
        "Bad request",
        "The request is malformed: a header, a cursor, the multipart framing or the body "
        "cannot be read.",
        "Read the problem's detail, fix the request and send it again.",
        400,
    ),
    ErrorCode.UNAUTHORIZED: CatalogueEntry(
        "Unauthorized",
        "The request has no API key, or the key is unknown or revoked.",
        "Send 'Authorization: Bearer <api key>' with a live key.",
        401,
    ),
    ErrorCode.FORBIDDEN: CatalogueEntry(
        "Forbidden",
        "The API key is valid but its scope does not allow this operation.",
        "Use a key with a wider scope (write or admin).",
        403,
    ),
    ErrorCode.NOT_FOUND: CatalogueEntry(
        "Not found",
        "No such object for this tenant, or no such route. An object of another tenant "
        "answers the same way.",
        "Check the id and the path. A report or student exists only once its job succeeded.",
        404,
    ),
    ErrorCode.METHOD_NOT_ALLOWED: CatalogueEntry(
        "Method not allowed",
        "The route exists but does not take this HTTP method.",
        "See the API docs at /docs for the methods each route takes.",
        405,
    ),
    ErrorCode.NOT_ACCEPTABLE: CatalogueEntry(
        "Not acceptable",
        "The route cannot answer in any media type the Accept header allows.",
        "Send an Accept header that includes application/json.",
        406,
    ),
    ErrorCode.CONFLICT: CatalogueEntry(
        "Conflict",
        "The request conflicts with the object's state: an Idempotency-Key reused with "
        "another body, cancelling a finished job, deleting an upload a running job uses.",
        "Use a new Idempotency-Key for a new request, or wait for the job to end.",
        409,
    ),
    ErrorCode.TOO_LARGE: CatalogueEntry(
        "Payload too large",
        "The body or the uploaded file is larger than the server's limit, or a file inflates "
        "past what validation may use.",
        "Send a smaller body or file; the limit is in the problem's detail.",
        413,
    ),
    ErrorCode.UNSUPPORTED_FORMAT: CatalogueEntry(
        "Unsupported file format",
        "The file's content is not a format this server accepts (formats are recognised by "
        "content, not by the file name).",
        "Teachers: ONNX or a torch.export .pt2. Datasets: .npy, .npz, CSV, Parquet or a ZIP "
        "of PNG/JPEG images.",
        415,
    ),
    ErrorCode.RANGE_NOT_SATISFIABLE: CatalogueEntry(
        "Range not satisfiable",
        "The Range header asks for bytes outside the file.",
        "Ask for a range inside the file; Content-Range in the answer gives its size.",
        416,
    ),
    ErrorCode.INVALID: CatalogueEntry(
        "Invalid content or spec",
        "The request is well formed but its content cannot work: a field has the wrong type "
        "or value, or the job spec does not fit its teachers and datasets.",
        "The problem's 'errors' list names each field and what is wrong with it.",
        422,
    ),
    ErrorCode.RATE_LIMITED: CatalogueEntry(
        "Too many requests",
        "A quota or rate limit of the tenant or key was reached.",
        "Wait the number of seconds in the Retry-After header, then retry.",
        429,
    ),
    ErrorCode.INTERNAL: CatalogueEntry(
        "Internal error",
        "Something failed that the service did not expect. Nothing the user sent explains it.",
        _SUPPORT,
        500,
    ),
    ErrorCode.SERVICE_UNAVAILABLE: CatalogueEntry(
        "Service unavailable",
        "A service the API depends on (the database) does not answer right now.",
        "Retry after the number of seconds in the Retry-After header. Nothing was lost: a "
        "request that got 503 made no change.",
        503,
    ),
    ErrorCode.STORAGE_FULL: CatalogueEntry(
        "Storage full",
        "The server's storage has no space left; the upload or the job's files could not "
        "be written.",
        "Retry later; the operator has to free space. Deleting old uploads and jobs helps.",
        507,
    ),
    ErrorCode.BAD_ARCHIVE: CatalogueEntry(
        "Damaged archive",
        "A zip archive (.npz, .pt2, image ZIP) cannot be read or lacks the records its "
        "format needs.",
        _RESUBMIT,
    ),
    ErrorCode.ARCHIVE_DUPLICATE: CatalogueEntry(
        "Duplicate archive entry",
        "The archive lists the same name twice, which different tools read differently.",
        "Recreate the archive so that each name appears once.",
    ),
    ErrorCode.ARCHIVE_ENCRYPTED: CatalogueEntry(
        "Encrypted archive entry",
        "An entry of the archive is encrypted.",
        "Upload an archive without encryption.",
    ),
    ErrorCode.ARCHIVE_LINK: CatalogueEntry(
        "Link in archive",
        "The archive contains a symbolic link.",
        "Put real files in the archive, not links.",
    ),
    ErrorCode.ARCHIVE_TOO_LARGE: CatalogueEntry(
        "Archive unpacks too large",
        "The archive inflates past the server's cap on unpacked bytes.",
        "Split the data set or store it less redundantly.",
    ),
    ErrorCode.ARCHIVE_TRAVERSAL: CatalogueEntry(
        "Unsafe path in archive",
        "An entry name is absolute, contains '..' or is malformed.",
        "Use relative names inside one folder.",
    ),
    ErrorCode.TOO_MANY_ENTRIES: CatalogueEntry(
        "Too many archive entries",
        "The archive has more entries than the server's cap.",
        "Pack the samples into fewer files (an .npz or Parquet file holds any number).",
    ),
    ErrorCode.UNKNOWN_MEMBER: CatalogueEntry(
        "Unexpected record in .pt2",
        "The .pt2 archive contains records that torch.export.save does not write for a "
        "plain module.",
        _REEXPORT,
    ),
    ErrorCode.UNSAFE_LOCATION: CatalogueEntry(
        "Tensors saved on another device",
        "The .pt2 archive holds tensors whose storage claims a device other than the CPU. "
        "Loading them here would make torch.export.load retry with an unsafe unpickler.",
        "Move the model and its example inputs to the CPU (model.cpu()) before torch.export "
        "and save again.",
    ),
    ErrorCode.UNSAFE_PICKLE: CatalogueEntry(
        "Unsafe pickle",
        "A pickle in the model file would build objects other than plain tensors (it could "
        "run code when loaded).",
        _REEXPORT,
    ),
    ErrorCode.UNSAFE_CONSTANT: CatalogueEntry(
        "Unsafe constant",
        "A constant of the .pt2 graph is not a plain tensor.",
        _REEXPORT,
    ),
    ErrorCode.UNSAFE_EXPRESSION: CatalogueEntry(
        "Unsafe symbolic shape",
        "A symbolic shape expression in the .pt2 graph is malformed or not a plain "
        "arithmetic expression.",
        _REEXPORT,
    ),
    ErrorCode.EXTERNAL_DATA: CatalogueEntry(
        "ONNX external data",
        "The ONNX model refers to weights stored outside the uploaded file.",
        "Save the model with its weights inside the file (onnx.save with "
        "save_as_external_data=False).",
    ),
    ErrorCode.TORCHSCRIPT_DISABLED: CatalogueEntry(
        "TorchScript disabled",
        "TorchScript has no safe loader and this server does not accept it.",
        _REEXPORT,
    ),
    ErrorCode.BAD_TEACHER: CatalogueEntry(
        "Unreadable teacher",
        "The model file cannot be loaded or run by its runtime.",
        "Check that the model loads and runs where it was exported, then export it again.",
    ),
    ErrorCode.BAD_INPUTS: CatalogueEntry(
        "Unsupported teacher inputs",
        "The teacher must take exactly one tensor input with a batch dimension.",
        "Export a model whose forward takes one tensor.",
    ),
    ErrorCode.BAD_OUTPUT: CatalogueEntry(
        "Unsupported teacher output",
        "The teacher's output is not a finite floating-point tensor of at least 2 class "
        "scores per sample.",
        "Export a classifier whose output is logits or probabilities of shape [N, classes].",
    ),
    ErrorCode.BAD_OUTPUT_NAME: CatalogueEntry(
        "No such teacher output",
        "The output_name given at upload is not one of the teacher's float [N, classes] outputs.",
        "Upload again with output_name set to one of the outputs the error lists, or leave it "
        "out to let the dry run pick.",
    ),
    ErrorCode.BAD_OUTPUT_KIND: CatalogueEntry(
        "Wrong output kind",
        "output_kind is not auto, logits, probabilities or log_probabilities, or the chosen "
        "output cannot be of that kind (probabilities must be rows >= 0 summing to 1).",
        "Upload again with output_kind auto, or the kind the output really is.",
    ),
    ErrorCode.AMBIGUOUS_OUTPUT: CatalogueEntry(
        "Several candidate outputs",
        "The teacher has more than one float [N, classes] output and none is named logits, so "
        "the service cannot tell which holds the class scores.",
        "Upload again with output_name set to the output to distil (the error lists them).",
    ),
    ErrorCode.UNKNOWN_INPUT_SHAPE: CatalogueEntry(
        "Unknown input shape",
        "The teacher's input shape cannot be determined from the file.",
        "Export the model with a fixed input shape (only the batch dimension may vary).",
    ),
    ErrorCode.UNSUPPORTED_INPUT: CatalogueEntry(
        "Unsupported input type",
        "The teacher takes an input type the service cannot feed.",
        "Export a model that takes a float tensor.",
    ),
    ErrorCode.UNSUPPORTED_OPERATOR: CatalogueEntry(
        "Unsupported operator",
        "The model uses an operator the runtime here cannot run.",
        "Export it with a standard opset, without custom operators.",
    ),
    ErrorCode.DRY_RUN_FAILED: CatalogueEntry(
        "Dry run failed",
        "Running the teacher on a sample input failed.",
        "Check that the model runs on an input of the shape it declares.",
    ),
    ErrorCode.BAD_CHILD_OUTPUT: CatalogueEntry(
        "The engine answered out of turn",
        "The sandboxed engine wrote a line that is not the event the worker expected (a foreign "
        "or malformed line, or an answer to another kind of request).",
        "Retry the job; if it fails the same way, report it with the job id: it is a bug.",
    ),
    ErrorCode.TEACHER_CRASHED: CatalogueEntry(
        "Validation crashed",
        "The sandboxed process that inspected the file died (for example past its memory "
        "or time limit).",
        "Upload a smaller model or data set; if it is small, report it to the operator.",
    ),
    ErrorCode.BAD_HEADER: CatalogueEntry(
        "Unreadable .npy header",
        "The .npy header cannot be parsed or does not match the file's size.",
        "Save the array again with numpy.save.",
    ),
    ErrorCode.BAD_CSV: CatalogueEntry(
        "Unreadable CSV",
        "The CSV file cannot be parsed (ragged rows, a bad encoding, a broken quote).",
        "Save it again as UTF-8 CSV with one header row and the same columns on every row.",
    ),
    ErrorCode.BAD_PARQUET: CatalogueEntry(
        "Unreadable Parquet",
        "The Parquet file cannot be read.",
        "Write it again with pyarrow or pandas (DataFrame.to_parquet).",
    ),
    ErrorCode.BAD_SHAPE: CatalogueEntry(
        "Bad shape",
        "The data has no samples, no feature columns, or not the shape [N, ...].",
        _RESUBMIT,
    ),
    ErrorCode.BAD_LAYOUT: CatalogueEntry(
        "Bad layout",
        "The image ZIP's folders do not form a valid layout (images at the top, or one "
        "folder per class).",
        "Put all images in one folder, or one folder per class.",
    ),
    ErrorCode.BAD_LABELS: CatalogueEntry(
        "Bad labels",
        "Labels are not a 1-D array of non-negative class indices, one per sample, within "
        "the teacher's classes.",
        "Fix the labels (y in an .npz, the 'label' column in CSV or Parquet).",
    ),
    ErrorCode.BAD_IMAGE: CatalogueEntry(
        "Damaged image",
        "An image in the ZIP cannot be decoded.",
        "Remove or replace the named image.",
    ),
    ErrorCode.IMAGE_TOO_LARGE: CatalogueEntry(
        "Image too large",
        "An image has more pixels than the server's cap.",
        "Downscale the images.",
    ),
    ErrorCode.UNSUPPORTED_IMAGE: CatalogueEntry(
        "Unsupported image",
        "A ZIP member is not a PNG or JPEG image.",
        "Convert the images to PNG or JPEG.",
    ),
    ErrorCode.UNSUPPORTED_DTYPE: CatalogueEntry(
        "Unsupported data type",
        "The array holds something other than numbers.",
        "Save a numeric array (integers or floats).",
    ),
    ErrorCode.STRUCTURED_ARRAY: CatalogueEntry(
        "Structured array",
        "The .npy array has named fields.",
        "Save a plain numeric array.",
    ),
    ErrorCode.OBJECT_ARRAY: CatalogueEntry(
        "Object array",
        "The array holds Python objects, which need pickle to load.",
        "Save a plain numeric array.",
    ),
    ErrorCode.NON_NUMERIC: CatalogueEntry(
        "Non-numeric column",
        "A CSV or Parquet feature column is not numeric.",
        "Encode the column as numbers or drop it.",
    ),
    ErrorCode.NON_FINITE_INPUTS: CatalogueEntry(
        "Non-finite values",
        "The data contains NaN or infinity.",
        "Replace or drop those values.",
    ),
    ErrorCode.MISSING_VALUES: CatalogueEntry(
        "Missing values",
        "A column has empty cells.",
        "Fill or drop the empty cells.",
    ),
    ErrorCode.NPZ_MEMBERS: CatalogueEntry(
        "Unexpected .npz members",
        "An .npz must hold an array 'x' and optionally integer labels 'y', nothing else.",
        "Save it with numpy.savez(path, x=..., y=...).",
    ),
    ErrorCode.MISSING_INPUT: CatalogueEntry(
        "Missing token input",
        "A token dataset lacks an array the teacher takes as input (token datasets name their "
        "arrays like the teacher's inputs: input_ids, attention_mask, token_type_ids, ...).",
        "Add the named array, or drop it from the teacher's export.",
    ),
    ErrorCode.BAD_TOKENIZER: CatalogueEntry(
        "Unreadable tokenizer",
        "The tokenizer part is not a Hugging Face tokenizers tokenizer.json (or it is one only "
        "token teachers take).",
        "Save it with tokenizer.save('tokenizer.json') (the tokenizers library) or "
        "save_pretrained, and upload that file with a teacher that takes token inputs.",
    ),
    ErrorCode.BAD_TEXT: CatalogueEntry(
        "Unreadable text dataset",
        'A JSON Lines text dataset holds one object a line with a string "text", optionally '
        'a string "text_pair" and an integer "label" (on every line or on none); a CSV or '
        'Parquet text dataset a string column "text", optionally "text_pair" and an integer '
        '"label" column with no empty cells.',
        "Fix the line or row the message names and upload the file again.",
    ),
    ErrorCode.TOKENIZER_MISMATCH: CatalogueEntry(
        "Tokenizer does not fit the teacher",
        "The tokenizer's vocabulary is larger than the teacher's embedding: it would make ids "
        "the teacher has no row for.",
        "Upload the tokenizer the teacher was trained with.",
    ),
    ErrorCode.UNSAFE_MODEL_FILE: CatalogueEntry(
        "File not allowed in a model folder",
        "A Hugging Face model folder (format hf) holds config.json, model.safetensors, "
        "tokenizer.json and small text files only: pickled weights (.bin, .pt, .pkl) and code "
        "(.py) are never loaded.",
        "Save the model with save_pretrained (safetensors is its default) and zip config.json, "
        "model.safetensors and tokenizer.json.",
    ),
    ErrorCode.REMOTE_CODE: CatalogueEntry(
        "Model asks for custom code",
        "The model folder's config.json asks for code or loading options beyond the built-in "
        "model (auto_map, trust_remote_code, custom_pipelines, quantization_config, "
        "_attn_implementation): none of it runs here.",
        "Use a model of a built-in transformers architecture, or export it to ONNX.",
    ),
    ErrorCode.UNSUPPORTED_ARCHITECTURE: CatalogueEntry(
        "Architecture not supported",
        "The model folder's config.json names an architecture outside the allow-list "
        "(sequence classifiers such as BertForSequenceClassification, causal language models "
        "such as LlamaForCausalLM).",
        "Export the model to ONNX or torch.export (.pt2) and upload that file instead.",
    ),
    ErrorCode.DATASET_TOO_SMALL: CatalogueEntry(
        "Dataset too small",
        "The dataset has too few samples to train on or to split for evaluation.",
        "Upload more samples, or give an eval_dataset_id.",
    ),
    ErrorCode.BAD_SPEC: CatalogueEntry(
        "Bad job spec",
        "A field of the job spec cannot work with this teacher and data.",
        "The message names the field; submit a corrected spec.",
    ),
    ErrorCode.BAD_STUDENT_CONFIG: CatalogueEntry(
        "Bad student configuration",
        "The student architecture or its knobs are unknown or do not fit.",
        "See GET /v1/students for the architectures and their knobs.",
    ),
    ErrorCode.BAD_PREPROCESSING: CatalogueEntry(
        "Bad preprocessing",
        "preprocessing.mean/std have the wrong length or a zero std.",
        "Give 1 value or one per channel, with every std non-zero.",
    ),
    ErrorCode.SHAPE_MISMATCH: CatalogueEntry(
        "Shape mismatch",
        "The dataset's samples do not fit the teacher's input.",
        "Upload data of the shape the teacher takes.",
    ),
    ErrorCode.STUDENT_SIZE: CatalogueEntry(
        "Student size",
        "No student of the asked architecture fits the size budget.",
        "Raise student.size_ratio or student.max_parameters, or pick another architecture.",
    ),
    ErrorCode.CANCELLED: CatalogueEntry(
        "Cancelled",
        "The job was cancelled on request.",
        "Submit it again if it was a mistake.",
    ),
    ErrorCode.TIME_LIMIT: CatalogueEntry(
        "Time limit",
        "The job ran past the server's time limit for one job.",
        "Use fewer epochs, a smaller student or a smaller transfer set.",
    ),
    ErrorCode.OUT_OF_MEMORY: CatalogueEntry(
        "Out of memory",
        "The job's process ran out of memory.",
        "Use a smaller batch_size, student or data set.",
    ),
    ErrorCode.WORKER_CRASHED: CatalogueEntry(
        "Worker crashed",
        "The process running the job died without a result.",
        _SUPPORT,
    ),
    ErrorCode.WORKER_LOST: CatalogueEntry(
        "Worker lost",
        "The worker running the job, or validating the upload, stopped answering on every "
        "attempt the server allows.",
        _SUPPORT,
    ),
    ErrorCode.SANDBOX_UNAVAILABLE: CatalogueEntry(
        "Sandbox unavailable",
        "The worker cannot build the sandbox that user files run in (bubblewrap missing, or "
        "no namespaces on its host), so it runs nothing.",
        "Report it to the operator: install bubblewrap or allow user namespaces on the "
        "worker's host.",
    ),
}


def entry(code: ErrorCode) -> CatalogueEntry:
    return CATALOGUE[code]


def is_disk_full(exc: BaseException) -> bool:
    """A write failed for lack of space (or of quota): ``storage_full``, not a crash. Looks
    through the chain of causes too (libraries re-raise an OSError as their own error)."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def problem_codes() -> list[ErrorCode]:
    """The codes that are HTTP problems (those with a status), in declaration order."""
    return [code for code in ErrorCode if CATALOGUE[code].status is not None]
