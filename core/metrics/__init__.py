"""Numbers computed from samples: PSNR/SSIM/MS-SSIM, BLEU/ROUGE-L, Fréchet distance and retrieval recall@k.

Pure functions of tensors, strings and embeddings; training uses retrieval for its
validation recall, and :mod:`medm2g.core.evaluation` uses all of them on a whole run.
"""
