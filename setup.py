from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "equiformer" / "version.py").read_text(), version)

denoise_requires = ["gemmi>=0.6", "matplotlib>=3.7", "tqdm>=4.60"]
atomistic_requires = ["ase>=3.23", "vesin>=0.3", "matplotlib>=3.7"]  # matplotlib: the trainer's plots
# GFN2-xTB labels for equiformer.atomistic.datasets.make_xtb_dataset.  Not in test_requires: PyPI has
# wheels for Linux x86_64 only, elsewhere pip would need a Fortran toolchain (its test skips without).
xtb_requires = [*atomistic_requires, "tblite>=0.4"]
test_requires = ["pytest>=7", "hypothesis>=6.80", "e3nn==0.6.0", *denoise_requires, *atomistic_requires]

setup(
    name="equiformer",
    version=version["__version__"],
    description="Equivariant graph attention networks (Equiformer, SO(2)/eSCN convolutions) "
    "for molecules and proteins",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["equiformer", "equiformer.*"]),
    package_data={"equiformer.data": ["*.npz", "*.txt"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy>=1.26"],
    extras_require={
        "denoise": denoise_requires,
        "atomistic": atomistic_requires,
        "xtb": xtb_requires,
        "test": test_requires,
        "bench": ["equiformer-pytorch==0.5.4", "psutil>=5.9"],
    },
    license="MIT",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
