/*
 * fuzz_detect.c - embd pack's format detection (lib/reader.c: magic bytes, then content, as
 * the path has no extension), then the reader it picks. Seeds: every reader's corpus.
 * Properties: fuzz_reader.h, and a detected format is a real one.
 */
#include "fuzz_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_reader(data, size, EMB_INPUT_AUTO);
}
