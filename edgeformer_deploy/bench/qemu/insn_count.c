/*
 * insn_count.c -- QEMU TCG plugin (API v1, qemu-user 7.2) counting the guest instructions executed
 * inside marked regions, for `edgeformer-bench --emulate` (edgeformer_deploy/bench/emulate.py builds it
 * with `gcc -shared -fPIC -O2`).
 *
 * Counting: every translated block gets an execution callback that adds the block's instruction count
 * to the counter of the vCPU executing it. In qemu-user each guest thread is a vCPU, so the counters are
 * per thread: a region counts the thread that opened it (the one running the inference; the runner
 * uses one runtime thread), exactly and deterministically, whatever other threads do meanwhile — those
 * are reported beside it. (An inline add, qemu_plugin_register_vcpu_tb_exec_inline, would be a bit
 * cheaper but can only target one global counter in API v1: it mixes in, and races with, other threads;
 * onnxruntime keeps a helper thread that wakes up now and then. Measured: the callback costs ~1% of
 * emulation time, which float-heavy inference spends in softfloat helpers.)
 *
 * Markers: the runner (edgeformer_deploy/bench/marker.py) calls close() on two magic negative
 * descriptors around each timed inference. The plugin sees the system call before QEMU executes it
 * (it fails with EBADF) and snapshots the counters: region = counter at END - counter at BEGIN.
 *
 * Arguments (qemu 7.2: `-plugin ./insn_count.so,out=PATH[,begin=0x..,end=0x..]`, each reaching
 * qemu_plugin_install() as one "name=value" string; the old `arg=X` spelling is deprecated there and
 * arrives as "X=on"):
 *   out=PATH      required; one line per closed region, in order, written and flushed at its END:
 *                 "<instructions of the region's thread> <instructions of all other threads meanwhile>
 *                 <guest threads alive at BEGIN>"; lines starting with '#' are notes (at exit)
 *   begin=, end=  the low 32 bits of the marker descriptors (defaults: marker.py's BEGIN_FD / END_FD)
 *   profile=PATH  also attribute each region's instructions to the translated blocks that executed them
 *                 (`edgeformer-bench --emulate --profile`): at each region's END, "region N" then one line
 *                 per block the region's thread ran, "<guest vaddr hex> <instructions in the block>
 *                 <executions>", summing exactly to the region's count. A block is attributed whole to its
 *                 start address (blocks end at branches and calls, so they rarely straddle two functions).
 *                 emulate.py maps the addresses to shared library + symbol with the guest's memory map.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_plugin_api.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* close() system call numbers: aarch64 (asm-generic table) and arm EABI */
#define NR_CLOSE_AARCH64 57
#define NR_CLOSE_ARM 6
/* vCPU slots; qemu-user gives each live guest thread the lowest free index. Higher ones share the last. */
#define MAX_VCPUS 1024

static uint64_t insns[MAX_VCPUS];  /* guest instructions per vCPU; each written only by its own thread */
static int64_t close_nr = -1;
static uint32_t begin_magic = 0xBAB9FFFFu; /* (uint32_t)-0x45460001 */
static uint32_t end_magic = 0xBAB9FFFEu;   /* (uint32_t)-0x45460002 */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;
static int in_region;
static unsigned int region_vcpu, region_threads, live_vcpus, max_index;
static uint64_t region_own, region_all;
static unsigned long regions, unmatched, overflow;

/* profile=: one record per translation (a block retranslated at the same address gets another; the
 * reader sums them). Only the region's thread increments `runs`, so plain increments are exact. */
struct block {
    uint64_t vaddr;
    uint64_t runs;
    uint32_t n_insns;
};
static FILE *profile;
static struct block **blocks;
static size_t n_blocks, cap_blocks;
static unsigned long unattributed;  /* blocks without a record (out of memory): counted, not profiled */

static inline unsigned int slot(unsigned int vcpu_index)
{
    return vcpu_index < MAX_VCPUS ? vcpu_index : MAX_VCPUS - 1;
}

static uint64_t total(void)
{
    uint64_t sum = 0;
    unsigned int i;

    for (i = 0; i <= max_index && i < MAX_VCPUS; i++) {
        sum += __atomic_load_n(&insns[i], __ATOMIC_RELAXED);
    }
    return sum;
}

static void tb_exec(unsigned int vcpu_index, void *n_insns)
{
    uint64_t *counter = &insns[slot(vcpu_index)];

    /* only this vCPU's thread writes its counter: a relaxed load + store is exact */
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + (uintptr_t)n_insns, __ATOMIC_RELAXED);
}

static void tb_exec_profiled(unsigned int vcpu_index, void *userdata)
{
    struct block *block = userdata;

    tb_exec(vcpu_index, (void *)(uintptr_t)block->n_insns);
    /* in_region / region_vcpu change only between regions, in this same thread's syscalls */
    if (in_region && vcpu_index == region_vcpu) {
        block->runs++;
    }
}

static struct block *new_block(struct qemu_plugin_tb *tb)
{
    struct block *block = calloc(1, sizeof(*block));

    if (block == NULL) {
        return NULL;
    }
    block->vaddr = qemu_plugin_tb_vaddr(tb);
    block->n_insns = (uint32_t)qemu_plugin_tb_n_insns(tb);
    pthread_mutex_lock(&lock);
    if (n_blocks == cap_blocks) {
        size_t cap = cap_blocks ? 2 * cap_blocks : 65536;
        struct block **grown = realloc(blocks, cap * sizeof(*blocks));
        if (grown == NULL) {
            pthread_mutex_unlock(&lock);
            free(block);
            return NULL;
        }
        blocks = grown;
        cap_blocks = cap;
    }
    blocks[n_blocks++] = block;
    pthread_mutex_unlock(&lock);
    return block;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    struct block *block = profile != NULL ? new_block(tb) : NULL;

    (void)id;
    if (block != NULL) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec_profiled, QEMU_PLUGIN_CB_NO_REGS, block);
    } else {
        if (profile != NULL) {
            unattributed++;
        }
        qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(uintptr_t)qemu_plugin_tb_n_insns(tb));
    }
}

/* at a region's END (lock held): its blocks, then reset them for the next region */
static void write_profile(unsigned long region)
{
    size_t i;

    fprintf(profile, "region %lu\n", region);
    for (i = 0; i < n_blocks; i++) {
        if (blocks[i]->runs) {
            fprintf(profile, "%" PRIx64 " %u %" PRIu64 "\n", blocks[i]->vaddr, blocks[i]->n_insns, blocks[i]->runs);
            blocks[i]->runs = 0;
        }
    }
    fflush(profile);
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    (void)id;
    pthread_mutex_lock(&lock);
    live_vcpus++;
    if (vcpu_index > max_index) {
        max_index = vcpu_index;
    }
    if (vcpu_index >= MAX_VCPUS) {
        overflow++;
    }
    pthread_mutex_unlock(&lock);
}

static void vcpu_exit(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    (void)id;
    (void)vcpu_index;
    pthread_mutex_lock(&lock);
    live_vcpus--;
    pthread_mutex_unlock(&lock);
}

static void syscall_cb(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                       uint64_t a8)
{
    uint32_t fd = (uint32_t)a1;

    (void)id; (void)a2; (void)a3; (void)a4; (void)a5; (void)a6; (void)a7; (void)a8;
    if (num != close_nr || (fd != begin_magic && fd != end_magic)) {
        return;
    }
    pthread_mutex_lock(&lock);
    if (fd == begin_magic) {
        if (in_region) {
            unmatched++;   /* BEGIN inside a region: restart it */
        }
        in_region = 1;
        region_vcpu = vcpu_index;
        region_threads = live_vcpus;
        region_own = insns[slot(vcpu_index)];
        region_all = total();
    } else if (!in_region || vcpu_index != region_vcpu) {
        unmatched++;       /* END without BEGIN (or from another thread): ignored */
    } else {
        uint64_t own = insns[slot(vcpu_index)] - region_own;
        uint64_t all = total() - region_all;

        in_region = 0;
        regions++;
        fprintf(out, "%" PRIu64 " %" PRIu64 " %u\n", own, all - own, region_threads);
        fflush(out);
        if (profile != NULL) {
            write_profile(regions);
        }
    }
    pthread_mutex_unlock(&lock);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id; (void)userdata;
    pthread_mutex_lock(&lock);
    if (out != NULL) {
        fprintf(out, "# regions %lu unmatched %lu open %d vcpus %u overflow %lu total %" PRIu64 "\n", regions,
                unmatched, in_region, max_index + 1, overflow, total());
        fclose(out);
        out = NULL;
    }
    if (profile != NULL) {
        fprintf(profile, "# blocks %lu unattributed %lu\n", (unsigned long)n_blocks, unattributed);
        fclose(profile);
        profile = NULL;
    }
    pthread_mutex_unlock(&lock);
}

static int parse_u32(const char *text, uint32_t *value)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(text, &end, 0);
    if (errno || *text == '\0' || *end != '\0' || v > 0xFFFFFFFFull) {
        return -1;
    }
    *value = (uint32_t)v;
    return 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    const char *path = NULL, *profile_path = NULL;
    int i;

    for (i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "out=", 4) == 0) {
            path = arg + 4;
        } else if (strncmp(arg, "profile=", 8) == 0) {
            profile_path = arg + 8;
        } else if (strncmp(arg, "begin=", 6) == 0 && parse_u32(arg + 6, &begin_magic) == 0) {
        } else if (strncmp(arg, "end=", 4) == 0 && parse_u32(arg + 4, &end_magic) == 0) {
        } else {
            fprintf(stderr, "insn_count: unknown or bad argument '%s' (out=PATH[,profile=PATH,begin=N,end=N])\n", arg);
            return -1;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "insn_count: needs out=PATH\n");
        return -1;
    }
    if (info->system_emulation) {
        fprintf(stderr, "insn_count: qemu-user only (got system emulation)\n");
        return -1;
    }
    if (strcmp(info->target_name, "aarch64") == 0) {
        close_nr = NR_CLOSE_AARCH64;
    } else if (strcmp(info->target_name, "arm") == 0) {
        close_nr = NR_CLOSE_ARM;
    } else {
        fprintf(stderr, "insn_count: unsupported guest '%s' (aarch64, arm)\n", info->target_name);
        return -1;
    }
    out = fopen(path, "w");
    if (out == NULL) {
        fprintf(stderr, "insn_count: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (profile_path != NULL && (profile = fopen(profile_path, "w")) == NULL) {
        fprintf(stderr, "insn_count: cannot write %s: %s\n", profile_path, strerror(errno));
        fclose(out);
        return -1;
    }
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_exit_cb(id, vcpu_exit);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, syscall_cb);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
