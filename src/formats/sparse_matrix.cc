// Unstructured sparse formats (see sparse_matrix.h).
#include "permdnn/core/sparse_matrix.h"
