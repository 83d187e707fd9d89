"""The analytic side: formula registries (conventions) and the dispatcher-level counter."""
