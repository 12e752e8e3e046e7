from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget


# The script beside this file, by path: a Space clones its repository into a folder named "app", and
# evaluate.load of a folder looks for <folder name>.py there.
module = evaluate.load(str(Path(__file__).with_name("amrg_nlg.py")))
launch_gradio_widget(module)
