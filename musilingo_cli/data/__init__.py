"""Data on its way to the model: dataset readers (training and evaluation splits), caption readers
(make-mi), ask's inputs (files, folders, manifests), equal-length batching, and the feature cache."""
