(define (problem plan_trial_T20990101_000000_000001)
(:domain alfred)
(:objects
agent1 - agent
        AppleType - otype
        MugType - otype
        CabinetType - rtype
        CounterTopType - rtype
        FridgeType - rtype
        SinkBasinType - rtype
        Apple_bar__plus_00_dot_50_bar__plus_00_dot_90_bar__plus_01_dot_00 - object
        Mug_bar__plus_01_dot_20_bar__plus_00_dot_90_bar__minus_00_dot_40 - object
        CounterTop_bar__plus_00_dot_99_bar__plus_00_dot_95_bar__plus_01_dot_02 - receptacle
        Fridge_bar__minus_00_dot_53_bar__plus_00_dot_00_bar__minus_01_dot_55 - receptacle
        Cabinet_bar__plus_01_dot_66_bar__plus_02_dot_05_bar__plus_00_dot_67 - receptacle
        Sink_bar__plus_01_dot_10_bar__plus_00_dot_91_bar__minus_01_dot_60_bar_SinkBasin - receptacle
        loc_bar_3_bar__minus_2_bar_3_bar_30 - location
        loc_bar_4_bar_1_bar_0_bar_45 - location
        loc_bar_4_bar_1_bar_1_bar__minus_30 - location
        loc_bar_4_bar__minus_3_bar_2_bar_45 - location
        loc_bar__minus_2_bar__minus_2_bar_2_bar_60 - location
        )

(:init

        (receptacleType CounterTop_bar__plus_00_dot_99_bar__plus_00_dot_95_bar__plus_01_dot_02 CounterTopType)
        (receptacleType Fridge_bar__minus_00_dot_53_bar__plus_00_dot_00_bar__minus_01_dot_55 FridgeType)
        (receptacleType Cabinet_bar__plus_01_dot_66_bar__plus_02_dot_05_bar__plus_00_dot_67 CabinetType)
        (receptacleType Sink_bar__plus_01_dot_10_bar__plus_00_dot_91_bar__minus_01_dot_60_bar_SinkBasin SinkBasinType)
        (objectType Apple_bar__plus_00_dot_50_bar__plus_00_dot_90_bar__plus_01_dot_00 AppleType)
        (objectType Mug_bar__plus_01_dot_20_bar__plus_00_dot_90_bar__minus_00_dot_40 MugType)
        (canContain CounterTopType AppleType)
        (canContain CounterTopType MugType)
        (canContain FridgeType AppleType)
        (canContain FridgeType MugType)
        (canContain CabinetType AppleType)
        (canContain CabinetType MugType)
        (canContain SinkBasinType AppleType)
        (canContain SinkBasinType MugType)
        (pickupable Apple_bar__plus_00_dot_50_bar__plus_00_dot_90_bar__plus_01_dot_00)
        (pickupable Mug_bar__plus_01_dot_20_bar__plus_00_dot_90_bar__minus_00_dot_40)
        (openable Fridge_bar__minus_00_dot_53_bar__plus_00_dot_00_bar__minus_01_dot_55)
        (openable Cabinet_bar__plus_01_dot_66_bar__plus_02_dot_05_bar__plus_00_dot_67)
        (atLocation agent1 loc_bar_3_bar__minus_2_bar_3_bar_30)
        (coolable Apple_bar__plus_00_dot_50_bar__plus_00_dot_90_bar__plus_01_dot_00)
        (heatable Apple_bar__plus_00_dot_50_bar__plus_00_dot_90_bar__plus_01_dot_00)
        (inReceptacle Apple_bar__plus_00_dot_50_bar__plus_00_dot_90_bar__plus_01_dot_00 CounterTop_bar__plus_00_dot_99_bar__plus_00_dot_95_bar__plus_01_dot_02)
        (objectAtLocation Apple_bar__plus_00_dot_50_bar__plus_00_dot_90_bar__plus_01_dot_00 loc_bar_4_bar_1_bar_0_bar_45)
        (inReceptacle Mug_bar__plus_01_dot_20_bar__plus_00_dot_90_bar__minus_00_dot_40 Sink_bar__plus_01_dot_10_bar__plus_00_dot_91_bar__minus_01_dot_60_bar_SinkBasin)
        (objectAtLocation Mug_bar__plus_01_dot_20_bar__plus_00_dot_90_bar__minus_00_dot_40 loc_bar_4_bar__minus_3_bar_2_bar_45)
        (receptacleAtLocation CounterTop_bar__plus_00_dot_99_bar__plus_00_dot_95_bar__plus_01_dot_02 loc_bar_4_bar_1_bar_0_bar_45)
        (receptacleAtLocation Fridge_bar__minus_00_dot_53_bar__plus_00_dot_00_bar__minus_01_dot_55 loc_bar__minus_2_bar__minus_2_bar_2_bar_60)
        (receptacleAtLocation Cabinet_bar__plus_01_dot_66_bar__plus_02_dot_05_bar__plus_00_dot_67 loc_bar_4_bar_1_bar_1_bar__minus_30)
        (receptacleAtLocation Sink_bar__plus_01_dot_10_bar__plus_00_dot_91_bar__minus_01_dot_60_bar_SinkBasin loc_bar_4_bar__minus_3_bar_2_bar_45)
        )

        (:goal
            (and
                (exists (?r - receptacle)
                    (exists (?o - object)
                        (and
                            (objectType ?o AppleType)
                            (receptacleType ?r FridgeType)
                            (inReceptacle ?o ?r)
                        )
                    )
                )
            )
        )
    )
