"""patchlab: the library of the activation patching course (IOI on GPT-2 small or the course model).

One module per course concept: ``models`` (loading), ``ioi`` (prompts), ``metrics``,
``patching``, ``direct`` (direct logit attribution, logit lens), ``ablation`` (mean ablation of
heads), ``circuits`` (faithfulness, completeness, minimality), ``plots``, ``diagrams`` (drawings
of the model and the circuit), ``published`` (GPT-2 small's published patching maps) and
``runtime`` (the device, the cost of slow cells, progress bars on stdout); ``hooks`` spells the hook
names (``act_name("z", 3)``).
"""

from patchlab.hooks import act_name
from patchlab.ioi import IOIData, IOIInputError, classic_ioi, generate_ioi
from patchlab.metrics import logit_diff, patching_metric
from patchlab.models import ModelUnavailableError, load_model
from patchlab.patching import agreement, attribution_patching, fast_patching, patch_ioi, reference_patching
from patchlab import plots  # registers the course's plotly template: figures that read on any screen

__all__ = [
    "IOIData",
    "IOIInputError",
    "ModelUnavailableError",
    "act_name",
    "agreement",
    "attribution_patching",
    "classic_ioi",
    "fast_patching",
    "generate_ioi",
    "load_model",
    "logit_diff",
    "patch_ioi",
    "patching_metric",
    "plots",
    "reference_patching",
]
__version__ = "0.1.0"
