"""Retrievers: ages from embeddings, by search in a gallery of labelled training faces.

The paper's estimate is `L1KNN`'s: the mean age of the 20 nearest gallery faces under L1
distance::

    knn = L1KNN(k=20)
    knn.fit(gallery_embeddings, gallery_ages)
    ages = knn.predict(query_embeddings)

Every retriever composes a `Gallery` (``retriever.gallery``): the training faces and their L1
search.
"""

from agemetric.default_plugins.baselines import DirectAge, ExpectedAge, RidgeAge
from agemetric.default_plugins.l1_knn import L1KNN
from agemetric.interfaces import Retriever
from agemetric.interfaces.gallery import Gallery, IndexOptions

__all__ = ["DirectAge", "ExpectedAge", "Gallery", "IndexOptions", "L1KNN", "Retriever", "RidgeAge"]
