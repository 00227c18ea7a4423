"""notebooks/quickstart.ipynb runs top to bottom (nbclient), as a user would run it."""

import json
from pathlib import Path

import pytest

from .helpers import require

nbformat = require('nbformat')
NotebookClient = require('nbclient').NotebookClient
require('ipykernel')

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_notebook_runs(smoke_run):
    """(After the shared smoke run: the notebook trains the same config, so its kernel loads the
    compiled programs from the suite's compilation cache.)"""
    notebook = nbformat.read(ROOT / 'notebooks' / 'quickstart.ipynb', as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(ROOT)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == 'error']
    assert any('image/png' in o.get('data', {}) for o in outputs)  # the drawn predictions
    text = json.dumps([o.get('text', '') for o in outputs])
    assert 'anchors; loss' in text and "'cls_logits': (1, " in text
