"""Only what pyproject.toml cannot say: install `mcub-lm-eval.pth` into site-packages (regular and editable installs),
so that lm-eval's bare `lm_eval --model mcub ...` finds the mcub model (see mcub/_lm_eval_hook.py)."""

import zipfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HOOK = "mcub-lm-eval.pth"


class BuildPyWithHook(build_py):
    def run(self):
        super().run()
        self.copy_file(HOOK, str(Path(self.build_lib) / HOOK))

    def get_outputs(self, include_bytecode=1):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / HOOK)]


class EditableWheelWithHook(editable_wheel):
    def run(self):
        super().run()
        for wheel in Path(self.dist_dir).glob("*.whl"):
            with zipfile.ZipFile(wheel, "a") as archive:
                if HOOK not in archive.namelist():
                    archive.write(HOOK, HOOK)


setup(cmdclass={"build_py": BuildPyWithHook, "editable_wheel": EditableWheelWithHook})
