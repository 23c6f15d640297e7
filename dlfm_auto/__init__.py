"""dlfm_auto: Optuna-driven AutoML studies for daily NEE from flux-tower data."""

from dlfm_auto._errors import UserError

__version__ = "0.1.0"

__all__ = ["UserError", "__version__"]
