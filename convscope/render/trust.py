"""Pictures of the trust metrics: deletion/insertion curves, method rankings, sanity-check cascades."""

from __future__ import annotations
