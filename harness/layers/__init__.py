"""The layers a suite measures: validated, frozen layer specs (``spec``), the torch modules they
build (``modules``), whole models for ``count --model`` (``zoo``) and the dtype vocabulary
(``dtypes``). ``spec`` and ``dtypes`` import torch only when a module or tensor is built."""
