"""Saves scripts/mlflow/model.py as an MLflow pyfunc model (models from code).

usage: python save_model.py OUTPUT_DIR
Run by scripts/mlflow.sh inside its virtualenv; the model is rebuilt whenever
model.py, inventory.json or this file change.
"""

import os
import shutil
import sys
import warnings

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    warnings.filterwarnings("ignore", category=UserWarning)
    out = sys.argv[1]
    if os.path.exists(out):
        shutil.rmtree(out)
    signature = ModelSignature(
        inputs=Schema([
            ColSpec("string", "userId"),
            ColSpec(Array("string"), "items"),
            ColSpec(Array("string"), "timestamps", required=False),
        ]),
        outputs=Schema([
            ColSpec(Array("string"), "itemIds"),
            ColSpec(Array("double"), "preds"),
        ]),
    )
    mlflow.pyfunc.save_model(
        path=out,
        python_model=os.path.join(HERE, "model.py"),
        artifacts={"inventory": os.path.join(HERE, "inventory.json")},
        signature=signature,
        input_example=pd.DataFrame({
            "userId": ["u1"],
            "items": [["shirt", "jeans"]],
            "timestamps": [["1795667676496", "1795667680000"]],
        }),
        pip_requirements=[f"mlflow-skinny=={mlflow.__version__}"],
    )


if __name__ == "__main__":
    main()
