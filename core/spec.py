"""The job spec, for the server's modules: it lives in ``stillhouse_contracts.spec``, shipped
with the client, so that the SDK builds and checks a spec with the same class the API
validates it with."""

from stillhouse_contracts.spec import (
    ARCHITECTURES as ARCHITECTURES,
)
from stillhouse_contracts.spec import (
    EXPORT_FORMATS as EXPORT_FORMATS,
)
from stillhouse_contracts.spec import (
    LM_DEFAULT_TOP_K as LM_DEFAULT_TOP_K,
)
from stillhouse_contracts.spec import (
    MAX_HIDDEN_WEIGHTS as MAX_HIDDEN_WEIGHTS,
)
from stillhouse_contracts.spec import (
    MAX_SWEEP_CANDIDATES as MAX_SWEEP_CANDIDATES,
)
from stillhouse_contracts.spec import (
    STD_MIN as STD_MIN,
)
from stillhouse_contracts.spec import (
    Alpha as Alpha,
)
from stillhouse_contracts.spec import (
    Architecture as Architecture,
)
from stillhouse_contracts.spec import (
    AugmentationSpec as AugmentationSpec,
)
from stillhouse_contracts.spec import (
    DistillationSpec as DistillationSpec,
)
from stillhouse_contracts.spec import (
    ExportSpec as ExportSpec,
)
from stillhouse_contracts.spec import (
    JobSpec as JobSpec,
)
from stillhouse_contracts.spec import (
    LossName as LossName,
)
from stillhouse_contracts.spec import (
    PreprocessingSpec as PreprocessingSpec,
)
from stillhouse_contracts.spec import (
    SizeRatio as SizeRatio,
)
from stillhouse_contracts.spec import (
    SoftLabelMode as SoftLabelMode,
)
from stillhouse_contracts.spec import (
    StudentSpec as StudentSpec,
)
from stillhouse_contracts.spec import (
    SweepSpec as SweepSpec,
)
from stillhouse_contracts.spec import (
    Temperature as Temperature,
)
from stillhouse_contracts.spec import (
    TrainingSpec as TrainingSpec,
)
