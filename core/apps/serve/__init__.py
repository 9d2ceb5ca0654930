"""``medm2g serve``: a local web page to try a trained run (report to images, image to anything, the run at a glance).

:mod:`.served_run` holds the run and generates; :mod:`.uploads` reads a dropped file; :mod:`.display`
draws pictures; :mod:`.overview` gathers the run's pictures and tables; :mod:`.handlers` is what the
page's controls do; :mod:`.page` is the Gradio page, the one module that imports Gradio.
"""
