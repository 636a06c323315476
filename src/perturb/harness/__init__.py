"""The book's machinery: the catalogue of papers, run configuration, claims and their records, the papermill
runner, the static checks, the Reproductions page and the command line. Chapters use three names from it,
re-exported by :mod:`perturb`: ``perturb.setup``, ``perturb.Claims`` and (from :mod:`perturb.plotting`)
``perturb.use_style``; the rest of :mod:`perturb` is the numerical library the chapters import.
"""
