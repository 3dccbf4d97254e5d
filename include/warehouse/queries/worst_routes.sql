-- Worst routes: the origin -> destination pairs that arrive late most often, and whether the model saw it coming.
--
-- Routes with at least 20 flights with a known outcome in :start .. :end, the ten with the highest
-- share of flights arriving 15 minutes or more late. mean_arr_delay_min is the mean arrival delay
-- in minutes (negative: early); mean_predicted the model's mean delay probability on the same flights.
SELECT origin,
       dest,
       COUNT(*)                     AS flights,
       AVG(1.0 * actual_is_delayed) AS delayed_share,
       AVG(delay_probability)       AS mean_predicted,
       AVG(arr_delay)               AS mean_arr_delay_min
FROM analytics.prediction_outcomes
WHERE flight_date BETWEEN :start AND :end
  AND actual_is_delayed IS NOT NULL
GROUP BY origin, dest
HAVING COUNT(*) >= 20
ORDER BY delayed_share DESC, flights DESC, origin, dest
LIMIT 10
