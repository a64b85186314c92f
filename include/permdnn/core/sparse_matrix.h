// Unstructured sparse formats (Deep Compression / EIE): placeholder, filled in
// by the simulator work (CSC + EIE packing) and the comparison work (CSR).
#pragma once
