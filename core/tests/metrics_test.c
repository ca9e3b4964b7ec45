/* metrics_test.c -- counters, gauges and the Prometheus text they render. */
#include "metrics.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

int main(void) {
    struct sl_buf b = {0};

    TEST("an unknown series reads 0", sl_metrics_get("sluice_nothing_total", NULL) == 0);
    sl_metrics_inc("sluice_x_total", NULL, 2);
    sl_metrics_inc("sluice_x_total", NULL, 3);
    TEST("a counter adds up", sl_metrics_get("sluice_x_total", NULL) == 5);
    sl_metrics_inc("sluice_f_total", "step=\"a\",reason=\"r1\"", 1);
    sl_metrics_inc("sluice_f_total", "step=\"a\",reason=\"r2\"", 4);
    TEST("label sets are series of their own",
         sl_metrics_get("sluice_f_total", "step=\"a\",reason=\"r1\"") == 1 &&
         sl_metrics_get("sluice_f_total", "step=\"a\",reason=\"r2\"") == 4);
    struct sl_metrics_series *s = sl_metrics_counter("sluice_x_total", NULL);
    sl_metrics_add(s, 10);
    TEST("a resolved counter is the same series", sl_metrics_get("sluice_x_total", NULL) == 15);
    struct sl_metrics_series *z = sl_metrics_counter("sluice_zero_total", "k=\"v\"");
    TEST("a resolved counter exists at 0", z && sl_metrics_get("sluice_zero_total", "k=\"v\"") == 0);
    sl_metrics_set("sluice_g", NULL, 7.5);
    sl_metrics_set("sluice_g", NULL, 3);
    TEST("a gauge keeps the last value", sl_metrics_get("sluice_g", NULL) == 3);
    sl_metrics_set("sluice_big", NULL, 1795667677389.0);
    static const double bounds[] = {0.1, 1, 10};
    struct sl_metrics_histogram *h = sl_metrics_histogram("sluice_lat_seconds", "k=\"v\"", bounds, 3);
    TEST("a histogram is found again by name and labels",
         sl_metrics_histogram("sluice_lat_seconds", "k=\"v\"", bounds, 3) == h);
    sl_metrics_observe(h, 0.05);
    sl_metrics_observe(h, 1);       /* on a bound: counted in that bucket */
    sl_metrics_observe(h, 5);
    sl_metrics_observe(h, 50);
    struct sl_metrics_histogram *h0 = sl_metrics_histogram("sluice_nolabel_seconds", NULL, bounds, 1);
    sl_metrics_observe(h0, 2);

    sl_metrics_render(&b);
    const char *t = sl_buf_cstr(&b);
    TEST("counters render with their type", strstr(t, "# TYPE sluice_x_total counter\nsluice_x_total 15\n") != NULL);
    TEST("gauges render with their type", strstr(t, "# TYPE sluice_g gauge\nsluice_g 3\n") != NULL);
    TEST("labels render in braces", strstr(t, "sluice_f_total{step=\"a\",reason=\"r2\"} 4\n") != NULL);
    TEST("one TYPE line per name", strstr(strstr(t, "# TYPE sluice_f_total") + 1, "# TYPE sluice_f_total") == NULL);
    TEST("big values stay integers", strstr(t, "sluice_big 1795667677389\n") != NULL);
    TEST("series come sorted by name", strstr(t, "sluice_big") < strstr(t, "sluice_f_total") &&
                                       strstr(t, "sluice_f_total") < strstr(t, "sluice_g "));
    TEST("histograms render cumulative buckets, sum and count",
         strstr(t, "# TYPE sluice_lat_seconds histogram\n"
                   "sluice_lat_seconds_bucket{k=\"v\",le=\"0.1\"} 1\n"
                   "sluice_lat_seconds_bucket{k=\"v\",le=\"1\"} 2\n"
                   "sluice_lat_seconds_bucket{k=\"v\",le=\"10\"} 3\n"
                   "sluice_lat_seconds_bucket{k=\"v\",le=\"+Inf\"} 4\n"
                   "sluice_lat_seconds_sum{k=\"v\"} 56.049999999999997\n"
                   "sluice_lat_seconds_count{k=\"v\"} 4\n") != NULL);
    TEST("a histogram without labels has only le",
         strstr(t, "sluice_nolabel_seconds_bucket{le=\"0.1\"} 0\n"
                   "sluice_nolabel_seconds_bucket{le=\"+Inf\"} 1\n"
                   "sluice_nolabel_seconds_sum 2\nsluice_nolabel_seconds_count 1\n") != NULL);
    sl_buf_free(&b);

    sl_metrics_reset();
    TEST("reset forgets every series", sl_metrics_get("sluice_x_total", NULL) == 0);
    sl_metrics_render(&b);
    TEST("nothing renders after reset", b.len == 0);
    sl_buf_free(&b);
    return TEST_DONE();
}
