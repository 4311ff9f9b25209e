"""Model quality: SAR fidelity of generated images and the SAR-CLIP that scores their adherence.

``metrics`` (amplitude-distribution distances in dB, speckle, GLCM texture), ``clip`` (a CLIP
trained contrastively on the dataset's SAR tile / caption pairs, retrieval), ``inception`` (FID
and KID on the FID Inception-v3, only when the user names its local weights), ``fidelity`` (a
training run's checkpoints and its base model scored on the held-out tiles, the promotion rule).
No Dagster here: ``sar_pipeline/defs/evaluation`` runs them as the ``sar_clip`` and
``sar_fidelity`` assets.
"""
