/*
 * fuzz_word2vec.c - the word2vec binary ("rows dim" line, then a word and dim raw floats per row)
 * reader of embd pack (lib/reader*.c), driven through emb_reader_open with the format named, so
 * detection never redirects the input elsewhere. Properties: fuzz_reader.h.
 */
#include "fuzz_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_reader(data, size, EMB_INPUT_W2V_BIN);
}
