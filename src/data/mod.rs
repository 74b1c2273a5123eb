//! Data: IDX (MNIST) and optdigits readers, datasets, batching, the transfer suite.
