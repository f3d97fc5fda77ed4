"""fbl-jax: the Feature-Balanced Loss for long-tailed recognition in JAX/Flax."""

from setuptools import find_packages, setup

CPU_EXTRA = ["onednn-cpu-gomp==2023.2.0", "onednn-devel-cpu-gomp==2023.2.0"]

setup(
    name="fbl-jax",
    version="0.1.0",
    description="Feature-Balanced Loss (Li, Cheung, Jiang, ICME 2022) for long-tailed recognition in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fbl_jax", "fbl_jax.*"]),
    package_data={
        "fbl_jax.reproduce": ["paper_numbers.json"],
        "fbl_jax.models": ["onednn/conv.cc"],
    },
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2",
        "jaxlib>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml-collections>=1.1.0",
        "absl-py>=2.1",
        "numpy>=1.26",
        # JAX's dtype package. 0.7.0's extension module takes 1.35 s to initialise (0.6.0:
        # 0.01 s; 2-core AMD EPYC, numpy 2.2 and 2.4), paid by every process that imports JAX:
        # each fbl-train start, each one-line config error, each test subprocess.
        "ml_dtypes>=0.5.0,!=0.7.0",
        "pillow>=10.0",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
    ],
    extras_require={
        # oneDNN's convolutions on the CPU backend (model.conv=auto picks them when installed):
        # the train step ~1.4x faster on a 2-core AVX-512 EPYC (BENCHMARKS.md). Compiled on first
        # use with the machine's C++ compiler; GNU OpenMP build (needs libgomp).
        "cpu": CPU_EXTRA,
        # tf.data pipelines for the large datasets and tfds sources. The CIFAR path
        # (image folders, on-device pipeline) never imports TensorFlow.
        "tf": ["tensorflow-cpu>=2.21.0", "tensorflow-datasets>=4.9.10"],
        "test": [
            "tensorflow-cpu>=2.21.0",
            "tensorflow-datasets>=4.9.10",
            "scikit-learn>=1.5",
            *CPU_EXTRA,
            "pytest>=8.0",
            "pytest-xdist>=3.5",
            "ruff>=0.17",
        ],
        "demo": ["scikit-learn>=1.5"],
    },
    entry_points={
        "console_scripts": [
            "fbl-train=fbl_jax.cli.train:run",
            "fbl-report=fbl_jax.report:run",
            "fbl-decouple=fbl_jax.cli.decouple:run",
            "fbl-bench=fbl_jax.cli.bench:run",
            "fbl-sweep=fbl_jax.cli.sweep:run",
            "fbl-reproduce=fbl_jax.reproduce.cli:run",
            "fbl-eval=fbl_jax.cli.evaluate:run",
        ]
    },
)
