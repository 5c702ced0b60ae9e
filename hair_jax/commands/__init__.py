"""The command lines, each a module with `main(argv) -> exit code`.

    evaluate   the work of `python eval.py` (`evaluate_checkpoint`)
    restore    `hair-restore`: restore image files
    export     `hair-export`: standalone artifacts (.jaxexport, .onnx)
    convert    `python -m hair_jax.convert`: PyTorch weights -> a model export
    prepare    `python -m hair_jax.data.prepare`: build the datasets
    ablation   `python -m hair_jax.experiments.ablation`: the study
    common     what they share: the checkpoint arguments, one-line errors
               (`<prog>: error: <message>`, exit 2), quiet library logs

train.py and eval.py, at the repository's top, parse their absl flags and
call into the package. The former module names (`hair_jax.restore`, ...)
still import and run these.
"""
