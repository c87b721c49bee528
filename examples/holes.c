/* A small program with holes for `diffill fill examples/holes.c`: the fill markers and the
   TODO-comment body are filled one after another, each seeing the fills before it. */
#include <stdio.h>

/* The arithmetic mean of n > 0 values. */
double mean(const double *values, int n) {
    double total = 0;
    for (int i = 0; i < n; i++) {
        <|fill|>
    }
    return total / n;
}

/* How many space-separated words s holds. */
int count_words(const char *s) {
    int words = 0, in_word = 0;
    for (; *s; s++) {
        <|fill|>
    }
    return words;
}

/* The largest of n > 0 values. */
int max_of(const int *values, int n) {
    /* TODO */
}

int main(void) {
    double v[] = {1, 2, 3};
    int w[] = {3, 9, 2};
    printf("%g %d %d\n", mean(v, 3), count_words("a b  c"), max_of(w, 3));
    return 0;
}
