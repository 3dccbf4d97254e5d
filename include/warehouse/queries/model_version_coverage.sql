-- Model version coverage: which model scored each day, and how many of the day's flights it scored.
--
-- One row per day of :start .. :end and model version that scored it. flights counts the day's
-- flights with an outcome loaded. A day with outcomes but no predictions (no champion yet, or
-- scoring skipped) has one row with no model and coverage 0; a day scored but whose outcomes are
-- not loaded yet has no flights and no coverage. Coverage below 1 means flights of the day have an
-- outcome but no prediction.
WITH known AS (
    SELECT flight_date, COUNT(*) AS flights
    FROM analytics.flight_outcomes
    WHERE flight_date BETWEEN :start AND :end
    GROUP BY flight_date
),
scored AS (
    SELECT flight_date, model_name, model_version, COUNT(*) AS predictions
    FROM analytics.flight_delay_predictions
    WHERE flight_date BETWEEN :start AND :end
    GROUP BY flight_date, model_name, model_version
)
SELECT COALESCE(k.flight_date, s.flight_date)       AS flight_date,
       k.flights,
       s.model_name,
       s.model_version,
       COALESCE(s.predictions, 0)                   AS predictions,
       1.0 * COALESCE(s.predictions, 0) / k.flights AS coverage
FROM known k
FULL OUTER JOIN scored s ON s.flight_date = k.flight_date
ORDER BY 1, 3, 4
