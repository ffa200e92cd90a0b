/*
 * fuzz_fvecs.c - the fvecs (an int32 dim before each row of floats) reader of embd pack
 * (lib/reader*.c), driven through emb_reader_open with the format named, so detection never
 * redirects the input elsewhere. Properties: fuzz_reader.h.
 */
#include "fuzz_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_reader(data, size, EMB_INPUT_FVECS);
}
